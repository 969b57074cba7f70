"""The English reasons other modules write (version policy rules, plan checks, the service window, phase
details, failure causes), shown in Chinese.

``version_policy`` and the engine keep writing their reasons in English (they are recorded in plans,
journals and the audit log as they are); the guide, ``inspect`` and the reports translate them here,
when they are shown. Each form of reason has one pattern and its Chinese template; a template's field
``{name}`` is the matched text as it is (a version, a path), ``{name:t}`` is translated again (a reason
inside a reason), ``{name:day}`` a weekday and ``{name:time}`` an ISO time shown in Beijing time. A reason
no pattern knows is shown as it is, after a Chinese note that it is the tool's own words. ``cause``
summarises a failure first in plain Chinese, the technical detail after. Pure: no I/O.
"""

from __future__ import annotations

import re

from .shown_time import DEFAULT_ZONE, shown_time

__all__ = ["translate", "cause", "failure", "word", "refusal", "UNTRANSLATED", "WORDS"]

UNTRANSLATED = "原文"
_V = r"[^\s()]+"

_DAYS = {"Monday": "星期一", "Tuesday": "星期二", "Wednesday": "星期三", "Thursday": "星期四", "Friday": "星期五",
         "Saturday": "星期六", "Sunday": "星期日", "mon": "周一", "tue": "周二", "wed": "周三", "thu": "周四",
         "fri": "周五", "sat": "周六", "sun": "周日"}
_CHANGES = {"external interfaces": "对外接口", "the configuration format": "配置文件格式", "monitoring": "监控/管理"}
_METRICS = {"disk use of the install dir's file system (%)": "安装目录所在文件系统的磁盘使用率（%）",
            "memory available (% of total)": "可用内存（占总量的 %）",
            "1-minute load average per CPU": "每个 CPU 的 1 分钟平均负载",
            "fs.file-max (file handles of the whole system)": "fs.file-max（整个系统的文件句柄数）",
            "open files limit (ulimit -n) of the product's process, else of the agent":
                "产品进程（否则为采集进程）的打开文件数上限（ulimit -n）",
            "processes limit (ulimit -u) of the product's process, else of the agent":
                "产品进程（否则为采集进程）的进程数上限（ulimit -u）",
            "net.core.somaxconn (listen backlog)": "net.core.somaxconn（监听队列长度）",
            "lines matching ERROR/SEVERE/FATAL/Exception in the last lines of the logs":
                "日志最后若干行中匹配 ERROR/SEVERE/FATAL/Exception 的行数"}
_LEVELS = {"major": "主版本", "minor": "次版本", "maintenance": "维护级别"}

# (pattern, Chinese template), tried in order; a pattern must match the whole reason
_FORMS: list[tuple[str, str]] = [
    # version_policy.rules
    (r"the package is for (?P<p>[^(]+), the installed product \(NOT CONFIRMED: (?P<w>.+)\)",
     "升级包针对的是 {p}，即本机所安装的产品（未经确认：{w:t}）"),
    (r"the package is for '(?P<t>[^']*)' but the installed product is '(?P<p>[^']*)' \(NOT CONFIRMED: (?P<w>.+)\); "
     r"the inventory says '(?P<c>[^']*)'", "升级包针对的是 {t}，但本机安装的产品是 {p}（未经确认：{w:t}）；清单写的是 {c}"),
    (r"the inventory's word; the host's own guess by (?P<f>.+) agrees, but no host trust root confirms it",
     "依据清单；主机自己的推测（{f:t}）与之一致，但没有主机信任根确认"),
    (r"the host's own guess by (?P<f>.+)", "主机自己的推测（{f:t}），没有主机信任根确认"),
    (r"its files on the host: (?P<f>.+)", "依据主机上该产品的识别文件：{f}"),
    (r"the host's ledger (?P<f>\S+)", "依据主机台账 {f}"),
    (rf"the package is for (?P<p>[^(]+), the installed product \((?P<w>.+)\)",
     "升级包针对的是 {p}，即本机所安装的产品（{w:t}）"),
    (rf"the package is for (?P<p>.+), the installed product", "升级包针对的是 {p}，即本机所安装的产品"),
    (r"the package is for '(?P<t>[^']*)' but the installed product is '(?P<p>[^']*)' \((?P<w>.+)\); the inventory "
     r"says '(?P<c>[^']*)'", "升级包针对的是 {t}，但本机安装的产品是 {p}（{w:t}）；清单写的是 {c}"),
    (r"the package is for '(?P<t>[^']*)' but the installed product is '(?P<p>[^']*)' \((?P<w>.+)\)",
     "升级包针对的是 {t}，但本机安装的产品是 {p}（{w:t}）"),
    # where the installed product came from (planner.py: the host's own account, hostagent/product.py)
    (r"by its files on the host: (?P<f>.+)", "依据主机上该产品的识别文件：{f}"),
    (r"by the host's ledger (?P<f>\S+)", "依据主机台账 {f}"),
    (r"by (?P<f>\S+) \"installs\" \((?P<d>.+)\)", "依据 root 在 {f} 中对 {d} 的 \"installs\" 声明"),
    (r"by the host's ledger (?P<f>\S+), written by a run its trust root accepted",
     "依据主机台账 {f}（由主机信任根接受的运行写入）"),
    (r"the inventory's word: the host does not tell", "依据清单（主机未说明已安装的产品）"),
    (r"the package is for '(?P<t>.*)' but the installed product is '(?P<p>.*)'",
     "升级包针对的是 {t}，但本机安装的产品是 {p}"),
    (rf"already at (?P<v>{_V})(?: \((?P<w>{_V}) is the same\))?", "已经是 {v}"),
    (r"(?P<r>.+): a downgrade is not a free upgrade", "{r:t}：降级不属于免费升级"),
    (r"not checked: (?P<r>.+), and the policy allows line changes", "未检查：{r:t}，且策略允许跨产品线"),
    (rf"(?P<a>{_V}) is newer than (?P<b>{_V}) \((?P<why>.+)\)", "{a} 比 {b} 新（{why:t}）"),
    (rf"(?P<a>{_V}) is older than (?P<b>{_V}) \((?P<why>.+)\)", "{a} 比 {b} 旧（{why:t}）"),
    (rf"level (?P<n>\d): (?P<x>{_V}) vs (?P<y>{_V})", "第 {n} 级：{x} 对 {y}"),
    (rf"tag (?P<x>{_V}) vs (?P<y>{_V})", "构建标记 {x} 对 {y}"),
    (r"an untagged build precedes its tagged builds", "不带构建标记的版本早于带标记的版本"),
    (rf"(?P<a>{_V}) and (?P<b>{_V}) are the same version.*", "{a} 与 {b} 是同一版本"),
    (rf"(?P<a>{_V}) and (?P<b>{_V}) are on different product lines \((?P<x>{_V}) vs (?P<y>{_V})\)",
     "{a} 与 {b} 属于不同的产品线（{x} 对 {y}）"),
    (rf"tags (?P<x>{_V}) and (?P<y>{_V}) have different letters and cannot be ordered without the catalog",
     "构建标记 {x} 与 {y} 的字母不同，没有目录说明就无法比较先后"),
    (rf"both versions are on line (?P<l>{_V})", "两个版本在同一产品线 {l} 上"),
    (r"both versions are on the numbered line \(level 3 is a number\)", "两个版本都在数字产品线上（第 3 级是数字）"),
    (rf"(?P<a>{_V}) -> (?P<b>{_V}) moves between product lines \((?P<x>{_V}) vs (?P<y>{_V})\); "
     r"the policy allows line changes", "{a} → {b} 跨越产品线（{x} 对 {y}）；策略允许跨产品线"),
    (rf"(?P<a>{_V}) -> (?P<b>{_V}) moves between product lines \((?P<x>{_V}) vs (?P<y>{_V})\); "
     r"the policy does not allow line changes", "{a} → {b} 跨越产品线（{x} 对 {y}）；策略不允许跨产品线"),
    (rf"levels 1-4 equal \((?P<b>{_V})\); only the build tag changes", "第 1-4 级相同（{b}）；只有构建标记变化"),
    (rf"levels 1-4 equal \((?P<b>{_V})\); no level changes", "第 1-4 级相同（{b}）；没有级别变化"),
    (rf"(?P<a>{_V}) -> (?P<b>{_V}) changes level (?P<n>\d) \((?P<name>\w+)\); only (?P<free>.+) free",
     "{a} → {b} 改变了第 {n} 级（{name:t}）；只有{free:t}可以自由变化"),
    (rf"level 1 equal \((?P<p>{_V})\); (?P<rest>.+)", "第 1 级相同（{p}）；{rest:t}"),
    (rf"levels 1-(?P<n>\d) equal \((?P<p>{_V})\); (?P<rest>.+)", "第 1-{n} 级相同（{p}）；{rest:t}"),
    (r"level 4 changes; (?P<free>.+) free", "第 4 级变化；{free:t}可以自由变化"),
    (r"only levels (?P<n>\d)-4 change; (?P<free>.+) free", "只有第 {n}-4 级变化；{free:t}可以自由变化"),
    (r"levels? (?P<list>[\d, and]+) (?:is|are)", "第 {list:t} 级"),
    (r"(?P<a>\d(?:, \d)*) and (?P<b>\d)", "{a}、{b}"),
    (r"the package declares no changes the policy refuses", "升级包没有声明策略所拒绝的变更"),
    (r"the package declares (?P<l>.+), which the policy does not refuse", "升级包声明了 {l}，策略不拒绝这些变更"),
    (r"the package declares (?:a change|changes) to (?P<w>.+); such upgrades are never free",
     "升级包声明会改变{w:t}；这类升级从不属于免费升级"),
    (r"contract valid until (?P<d>\S+) \(today (?P<t>\S+)\)", "维保合同有效期至 {d}（今天是 {t}）"),
    (r"contract ended (?P<d>\S+) \(today (?P<t>\S+)\)", "维保合同已于 {d} 到期（今天是 {t}）"),
    (r"contract valid until (?P<d>\S+) \(today (?P<t>\S+); from the inventory's maintenance_until\)",
     "维保合同有效期至 {d}（今天是 {t}；来自清单的 maintenance_until）"),
    (r"contract ended (?P<d>\S+) \(today (?P<t>\S+); from the inventory's maintenance_until\)",
     "维保合同已于 {d} 到期（今天是 {t}；来自清单的 maintenance_until）"),
    (r"contract valid until (?P<d>\S+) \(today (?P<t>\S+); from the policy's rules.contracts entry (?P<e>.+)\)",
     "维保合同有效期至 {d}（今天是 {t}；来自策略 rules.contracts 中的条目 {e}）"),
    (r"contract ended (?P<d>\S+) \(today (?P<t>\S+); from the policy's rules.contracts entry (?P<e>.+)\)",
     "维保合同已于 {d} 到期（今天是 {t}；来自策略 rules.contracts 中的条目 {e}）"),
    (r"not checked: no host given", "未检查：没有指定主机"),
    (r"no maintenance contract date for host (?P<h>\S+): the policy requires a contract; give maintenance_until in "
     r"the inventory or the host in the policy's rules.contracts",
     "主机 {h} 没有维保合同日期：策略要求有效的维保合同；请在清单中填写 maintenance_until，或在策略的 rules.contracts 中列出该主机"),
    (r"not checked: the policy does not require a maintenance contract", "未检查：策略不要求维保合同"),
    (r"not checked: no host contract date given", "未检查：没有提供本机的维保合同日期"),
    (r"not checked: no date for today given", "未检查：没有提供今天的日期"),
    (r"full package: no requires range", "完整包：没有适用版本范围"),
    (r"a patch must declare the versions it applies to", "补丁必须声明它适用的版本"),
    (r"unknown package kind (?P<k>.+); expected full or patch", "未知的升级包类型 {k}；应为 full 或 patch"),
    (rf"(?P<v>{_V}) is within (?P<r>.+)", "{v} 在适用范围 {r} 之内"),
    (rf"(?P<v>{_V}) is outside (?P<r>.+?): (?P<why>.+)", "{v} 不在适用范围 {r} 之内：{why:t}"),
    (r"checked when the run starts: an engineer's signed approval of this exact plan",
     "在运行开始时检查：工程师对这份计划的签名审批"),
    # plan checks (upgrader.core.plan, upgrader.core.planner)
    (r"no manifest of an earlier install by upgrader yet; this run records one",
     "还没有 upgrader 以前安装留下的清单；本次运行会记录一份"),
    (r"product files match the last install", "产品文件与上次安装时一致"),
    (r"host trust root: none \u2014 the controller's trust roots decide",
     "主机信任根：无 —— 由控制端的信任根决定"),
    (r"host trust root: (?P<d>\S+) \(approvals by (?P<a>\S+), catalogs by (?P<v>\S+), (?P<n>\d+) approval\(s\) "
     r"required\)", "主机信任根：{d}（审批人见 {a}，目录签名者见 {v}，需要 {n} 份审批）"),
    (r"(?P<f>\d+) MiB free, (?P<n>\d+) MiB needed for the package and staging",
     "可用 {f} MiB，升级包和暂存需要 {n} MiB"),
    (r"host is locked by run (?P<r>\S+) \((?P<who>[^)]*)\)", "主机已被运行 {r}（{who}）锁定"),
    # health checks proven on the running version (upgrader.core.plan, upgrader.core.probe_proof)
    (rf"(?P<n>\d+) probe\(s\) pass on the running (?P<v>{_V}): (?P<l>.+); (?P<k>\d+) log probe\(s\) judged after "
     r"start", "{n} 项检查在当前运行的 {v} 上通过：{l:proofs}；另有 {k} 项日志检查在新版本启动后判断"),
    (rf"(?P<n>\d+) probe\(s\) pass on the running (?P<v>{_V}): (?P<l>.+)", "{n} 项检查在当前运行的 {v} 上通过：{l:proofs}"),
    (r"pid (?P<p>\S+) alive", "进程 {p} 在运行"),
    (r"pid file (?P<f>\S+) names a process that is NOT the service's own: pid (?P<p>\d+) \(uid (?P<u>[\d/]+)\): .+",
     "pid 文件 {f} 指向的进程 {p}（uid {u}）不是该服务自己的"),
    (r"port (?P<n>\d+) open", "端口 {n} 已打开"),
    (r"(?P<u>\S+) answered (?P<s>\d+)", "{u} 返回 {s}"),
    (rf"the catalog has no package of (?P<p>\S+) (?P<v>{_V})", "目录中没有 {p} {v} 的升级包"),
    # the service window (version_policy.window)
    (r"(?P<when>\d{4}-\d\d-\d\d \d\d:\d\d) (?P<day>\w+) \((?P<tz>[^)]+)\) is inside the service window: "
     r"(?P<why>.+), (?P<hours>\d\d:\d\d-\d\d:\d\d)", "{when} {day:day}（{tz:zone}）在服务时间窗口内：{why:t}，{hours}"),
    (r"(?P<when>\d{4}-\d\d-\d\d \d\d:\d\d) (?P<day>\w+) \((?P<tz>[^)]+)\) is outside the service window: "
     r"(?P<why>.+)", "{when} {day:day}（{tz:zone}）不在服务时间窗口内：{why:t}"),
    (r"before it opens at (?P<t>\d\d:\d\d) \((?P<hours>\S+) on working days\); (?P<next>.+)",
     "窗口 {t} 才开放（工作日 {hours}）；{next:t}"),
    (r"after it closes at (?P<t>\d\d:\d\d) \((?P<hours>\S+) on working days\); (?P<next>.+)",
     "窗口已于 {t} 关闭（工作日 {hours}）；{next:t}"),
    (r"(?P<why>.+ is (?:a public holiday|not a service day) .+); (?P<next>it opens next .+|the .+)",
     "{why:t}；{next:t}"),
    (r"before it opens at (?P<t>\d\d:\d\d) \((?P<hours>\S+) on working days\)", "窗口 {t} 才开放（工作日 {hours}）"),
    (r"after it closes at (?P<t>\d\d:\d\d) \((?P<hours>\S+) on working days\)", "窗口已于 {t} 关闭（工作日 {hours}）"),
    (r"it opens next at (?P<t>\S+)", "下次开放时间：{t:time}"),
    (r"the policy refuses runs outside the service window \(window\.outside: refuse\)",
     "策略拒绝在服务时间窗口之外运行（window.outside: refuse）"),
    (r"nothing was changed", "未做任何改动"),
    (r"run it inside the window \(it opens next at (?P<t>\S+)\)", "请在窗口内运行（下次开放时间：{t:time}）"),
    (r"run it inside the window", "请在窗口内运行"),
    (r"the window does not open in the next (?P<n>\d+) days", "今后 {n} 天内窗口都不开放"),
    (r"the next opening cannot be told: (?P<why>.+)", "无法判断下次开放时间：{why:t}"),
    (r"(?P<day>[A-Z]\w+) is a working day", "{day:day}是工作日"),
    (r"(?P<day>[A-Z]\w+) (?P<d>\S+) is a make-up working day \(调休, for (?P<f>.+)\)", "{day:day} {d} 是调休工作日（{f}）"),
    (r"(?P<d>\d{4}-\d\d-\d\d) is a public holiday \((?P<n>.+)\)", "{d} 是法定节假日（{n}）"),
    (r"(?P<day>[A-Z]\w+) is not a service day \((?P<days>.+)\)", "{day:day}不是服务日（{days}）"),
    (r"no holiday data for (?P<y>\d+): cannot tell whether (?P<d>\S+) is a working day; add the year to (?P<f>.+)",
     "没有 {y} 年的节假日数据，无法判断 {d} 是否为工作日；请把该年份加入 {f}"),
    # phase details (upgrader.core.engine)
    (rf"(?P<a>{_V}) -> (?P<b>{_V}), package on host", "{a} → {b}，升级包已在本机"),
    (r"(?P<n>\d+) files \((?P<m>\d+) MiB\) snapshotted and verified, (?P<s>\d+) staged",
     "已备份并校验 {n} 个文件（{m} MiB），已暂存 {s} 个文件"),
    (r"stopped in (?P<s>[\d.]+)s \(already stopped\)", "{s} 秒（服务原本已停止）"),
    (r"stopped in (?P<s>[\d.]+)s \(escalated to (?P<sig>\S+)\)", "{s} 秒内停止（已升级为发送 {sig}）"),
    (r"stopped in (?P<s>[\d.]+)s", "{s} 秒内停止"),
    (r"(?P<n>\d+) files in place in (?P<s>[\d.]+)s", "{s} 秒内放好 {n} 个文件"),
    (r"start command done in (?P<s>[\d.]+)s", "启动命令在 {s} 秒内完成"),
    (r"healthy: (?P<n>\d+) probes passed (?P<k>\d+) times over (?P<s>[\d.]+)s",
     "运行正常：{n} 项检查在 {s} 秒内通过了 {k} 次"),
    (r"(?P<n>\d+) files restored from the verified backup in (?P<s>[\d.]+)s; byte-identical",
     "{s} 秒内从经过校验的备份恢复了 {n} 个文件；与升级前逐字节一致"),
    (r"(?P<n>\d+) files restored from the verified backup in (?P<s>[\d.]+)s; byte-identical; the configuration in use "
     r"before the rollback \((?P<p>.+)\) is kept in (?P<d>.+)",
     "{s} 秒内从经过校验的备份恢复了 {n} 个文件；与升级前逐字节一致；回滚前正在使用的配置（{p}）保存在 {d}"),
    (r"interrupted during stop", "停止服务时被中断"),
    (r"product files were changed by hand since the last install: (?P<l>.+)", "上次安装后产品文件被手工改过：{l}"),
    (r"restored tree differs from the backup: (?P<l>.+)", "恢复后的文件与备份不一致：{l}"),
    # causes (the engine's words after the phase name)
    (r"never healthy after start: (?P<d>.+)", "启动后一直不健康：{d}"),
    (r"healthy at first, then failed during the observation window: (?P<d>.+)", "起初正常，观察期内出现故障：{d}"),
    (r"never healthy after start", "启动后一直不健康"),
    (r"healthy at first, then failed during the observation window", "起初正常，观察期内出现故障"),
    (r"cancelled by the operator(?: \(before (?P<p>\w+)\))?", "操作员已取消"),
    (r"the host runs (?P<v>\S+), the plan expected (?P<p>.+)", "本机运行的是 {v}，计划预期的是 {p}"),
    (r"only (?P<f>\d+) MiB free, (?P<n>\d+) MiB needed", "只有 {f} MiB 可用，需要 {n} MiB"),
    (r"(?P<no>not )?(?P<op>[<>=!]=?|==)(?P<b>[^\s(]+) \((?P<why>.+)\)", "{no:not}{op}{b}（{why:t}）"),
    # the engineer's public key (upgrader.customer.access)
    (r"this public key is in RFC 4716 \(SSH2\) format", "这是 RFC 4716（SSH2）格式的公钥，请先用 ssh-keygen -i 转换"),
    (r"expected one public key line like .+, found (?P<n>.+) \(a grant is for one key\)",
     "文件中应当正好有一行公钥（如 ssh-ed25519 AAAA... 名称），实际是 {n:n}（一次授权只针对一个公钥）"),
    (r"not an OpenSSH public key line: options come before the key .*", "不是纯公钥行：公钥前面带有选项（像 authorized_keys 的行）"),
    (r"not an OpenSSH public key line .*", "不是 OpenSSH 公钥行（应为“类型 BASE64 [注释]”）"),
    (r"DSA keys are refused by current OpenSSH", "当前的 OpenSSH 不再接受 DSA 密钥"),
    (r"this is an SSH certificate", "这是 SSH 证书，不是公钥"),
    (r"unknown key type (?P<k>.+)", "未知的密钥类型 {k}"),
    (r"the key data is not valid base64 \(a damaged copy\?\)", "密钥数据不是有效的 base64（文件可能已损坏）"),
    (r"the file is too large to be a public key", "文件太大，不可能是公钥"),
    # available (upgrader.customer.available)
    (r"newest free upgrade: (?P<v>\S+) \((?P<k>\w+)\)", "最新的免费升级：{v}（{k:kind}）"),
    (r"no free upgrade: the policy refuses all (?P<n>\d+) newer version\(s\) in the catalog",
     "没有免费升级：目录中 {n} 个更新的版本都被策略拒绝"),
    (r"already at the newest (?P<p>\S+) version in the catalog \((?P<v>\S+)\)", "已经是目录中 {p} 的最新版本（{v}）"),
    (r"free fix: (?P<v>\S+) \((?P<k>\w+), (?P<f>\S+)\)", "免费修复：{v}（{k:kind}，{f}）"),
    (r"no free fix: (?P<why>.+)", "没有免费修复：{why:t}"),
    (r"fixed in (?P<v>\S+), which this catalog does not hold", "已在 {v} 中修复，但本目录中没有该版本"),
    (r"no fixed version given", "公告没有给出修复版本"),
    (r"(?P<v>\S+) \((?P<k>\w+)\) is refused: (?P<why>.+)", "{v}（{k:kind}）被拒绝：{why:t}"),
    # errors the operator meets (approvals, locks, inputs); the file they name comes first
    (r"(?s)the plan refuses these hosts, nothing was changed:\n  (?P<h>[^:\n]+): (?P<r>[^\n]+)",
     "计划拒绝了主机 {h}，未做任何改动：{r:t}"),
    (r"expired at (?P<t>\S+) \(approved by (?P<a>.+)\)", "审批已于 {t:time} 过期（审批人 {a}）"),
    (r"this approval was already used by run (?P<r>\S+) at (?P<t>\S+); an approval is good for one run",
     "这份审批已被运行 {r} 于 {t:time} 使用过；一份审批只能用于一次运行"),
    (r"approves plan (?P<a>\S+), but this plan is (?P<b>\S+): the plan changed after it was approved .*",
     "审批针对的是计划 {a}，而这份计划是 {b}：计划在审批后发生了变化"),
    (r"signed by an untrusted key: (?P<e>.+)", "签名所用的密钥不受信任：{e}"),
    (r"(?P<a>\S+) approved their own plan; another engineer must approve it \(segregation of duties\)",
     "{a} 审批了自己的计划；必须由另一位工程师审批（职责分离）"),
    (r"no approval given: .+", "没有提供审批文件"),
    (r"cannot read the approval: (?P<e>.+)", "无法读取审批文件：{e}"),
    (r"the install dir does not exist \(or is not a directory\)", "安装目录不存在（或不是目录）"),
    (r"cannot tell which product is installed here \(tried the playbooks (?P<l>.+)\)",
     "无法判断这里安装的是什么产品（已尝试剧本 {l}）"),
    (r"give either --inventory INV or --install-dir DIR", "请给出 --inventory 清单 或 --install-dir 安装目录 之一"),
    (r"-o: the report's name must end in \.html or \.json, got (?P<f>.+)", "-o：报告文件名必须以 .html 或 .json 结尾，实际是 {f}"),
    (r"cannot read the public key: (?P<e>.+)", "无法读取公钥：{e}"),
    (r"this is a PRIVATE key, not a public key; nothing was changed", "这是私钥，不是公钥；未做任何改动"),
    (r"--hours must be a number of hours above 0, got (?P<h>\S+)", "--hours 必须是大于 0 的小时数，实际是 {h}"),
    (r"--hours (?P<h>\S+) is beyond the policy's maximum of (?P<m>\S+) hours", "--hours {h} 超过了策略规定的最多 {m} 小时"),
    (r"--from: (?P<p>.+) is not an OpenSSH address pattern .*", "--from：{p} 不是 OpenSSH 地址模式"),
    (r"--from: (?P<p>.+) is not a CIDR block .*", "--from：{p} 不是有效的网段（CIDR）"),
    (r"no grant (?P<i>\S+) here; its grants: (?P<l>.+)", "这里没有授权 {i}；现有的授权：{l}"),
    (r"no grant (?P<i>\S+) here; it holds no grant", "这里没有授权 {i}；文件中没有任何授权"),
    (r"no grant (?P<i>\S+) in (?P<f>.+)", "{f} 中没有授权 {i}"),
    (r"no run '(?P<r>[^']+)' in (?P<d>.+)", "{d} 中没有运行 {r}"),
    (r"run (?P<r>\S+) is still running in another upgrader process \(or a resume or rollback of it is\)",
     "运行 {r} 仍在另一个 upgrader 进程中运行（或它的恢复或回滚正在进行）"),
    (r"wait until it ends, or stop it \(Ctrl-C\), then try again", "等它结束，或停止它（Ctrl-C）后再试"),
    (r"host is locked by (?P<rest>.+)", "主机已被锁定：{rest}"),
    (r"cannot read (?P<f>.+?): (?P<e>.+)", "无法读取 {f}：{e}"),
    # inspection findings (upgrader.customer.inspection)
    (r"install dir (?P<d>.+) does not exist", "安装目录 {d} 不存在"),
    (r"installed version unreadable: (?P<e>.+)", "无法读取已安装的版本：{e}"),
    (r"the product is not running \(pid file (?P<f>\S+): absent\)", "产品没有运行（pid 文件 {f} 不存在）"),
    (r"the product is not running \(pid file (?P<f>\S+): (?P<p>.+)\)", "产品没有运行（pid 文件 {f}：{p}）"),
    (r"port (?P<p>\d+) is not open on 127\.0\.0\.1", "端口 {p} 在 127.0.0.1 上没有开放"),
    (r"(?P<what>.+): (?P<v>[\d.e+-]+) is (?P<dir>above|below) (?P<l>[\d.e+-]+)", "{what:metric}：{v} {dir:dir} {l}"),
    (r"(?P<f>.+): (?P<n>\d+) error line\(s\) in its last (?P<k>\d+) lines; last: (?P<s>.*)",
     "{f}：最后 {k} 行中有 {n} 行错误；最后一行：{s}"),
    # the seal of a run's accepted plan (trust/run_seal.py), refused by resume and rollback
    (r"(?P<f>\S+) line (?P<n>\d+): the run's accepted plan is not sealed: the run was started by an older upgrader, "
     r"which did not sign it, so nothing proves it is the plan that was approved; run (?P<r>\S+) cannot be resumed or "
     r"rolled back by this upgrader, nothing was changed",
     "{f} 第 {n} 行：这次运行所接受的计划没有封印：运行是由旧版本的 upgrader 启动的，旧版本没有为它签名，无法证明它就是"
     "被批准的计划；本版本的 upgrader 不能继续（resume）或回滚（rollback）运行 {r}，未做任何改动"),
    (r"finish it with the upgrader that started it \('(?P<a>[^']+)' or '(?P<b>[^']+)' there\), or put each host back "
     r"by hand \('upgrader status' shows what each runs; the run's backup is in the agent's state dir \.upgrader-NAME "
     r"beside the install, the playbook has the stop and start commands\), then make, approve and run a new plan",
     "请用启动这次运行的那个版本的 upgrader 完成它（在那里执行 '{a}' 或 '{b}'），或者手工恢复每台主机（'upgrader "
     "status' 显示每台主机运行的版本；这次运行的备份在安装目录旁的代理状态目录 .upgrader-NAME 中，停止和启动命令见剧本），"
     "然后重新制定、批准并运行一份新计划"),
    (r"(?P<f>\S+) line (?P<n>\d+): the seal of the run's accepted plan does not verify \((?P<e>.+)\): the record "
     r"\(plan digest, catalog or approvals\) was changed after the run started; nothing was changed",
     "{f} 第 {n} 行：这次运行所接受计划的封印验证失败（{e}）：该记录（计划摘要、目录或批准）在运行开始后被改过；"
     "未做任何改动"),
    (r"(?P<f>\S+) line (?P<n>\d+): the run's accepted plan is sealed by key (?P<k>\S+), which (?P<s>\S+) does not "
     r"list for 'upgrader-audit' now: it is not an operator's key; nothing was changed",
     "{f} 第 {n} 行：这次运行所接受的计划由密钥 {k} 封印，而 {s} 现在没有为 'upgrader-audit' 列出该密钥：它不是操作员的"
     "密钥；未做任何改动"),
    (r"(?P<f>\S+) line (?P<n>\d+): the operator's policy names no audit\.allowed_signers to check the seal of the "
     r"run's accepted plan against \(key (?P<k>\S+)\); nothing was changed",
     "{f} 第 {n} 行：操作员的策略没有设置 audit.allowed_signers，无法核对这次运行所接受计划的封印（密钥 {k}）；"
     "未做任何改动"),
    (r"(?P<f>\S+): no record of an accepted plan: this run never started, or its journal was cut; nothing was changed",
     "{f}：没有“计划已接受”的记录：这次运行从未开始，或者它的日志被截断了；未做任何改动"),
    (r"the run's journal was edited after the run started: put the journal back from a backup of the operator's "
     r"HOME, or make, approve and run a new plan",
     "这次运行的日志在运行开始后被改过：请从操作员 HOME 的备份中恢复日志，或者重新制定、批准并运行一份新计划"),
    (r"if it is an operator's key, add its line to (?P<s>\S+) \(namespaces=\"upgrader-audit\"\); otherwise the run's "
     r"journal was edited after the run started: put the journal back from a backup of the operator's HOME, or make, "
     r"approve and run a new plan",
     "如果它是操作员的密钥，请把它的一行加入 {s}（namespaces=\"upgrader-audit\"）；否则说明这次运行的日志在运行开始后"
     "被改过：请从操作员 HOME 的备份中恢复日志，或者重新制定、批准并运行一份新计划"),
    (r"set audit\.allowed_signers in the operator's policy to the file that lists the operators' keys \(namespace "
     r"upgrader-audit\)", "请在操作员的策略中把 audit.allowed_signers 设为列出操作员密钥的文件（命名空间 upgrader-audit）"),
    (r"(?P<f>\S+): the plan was signed by (?P<k>\S+), which (?P<s>\S+) does not let sign plans now: (?P<w>.+): a "
     r"requester whose line leaves out 'upgrader-plan' or has expired cannot ask for a plan",
     "{f}：计划由密钥 {k} 签署，而 {s} 现在不允许该密钥签署计划：{w}：所在行不允许 'upgrader-plan' 或已过期的申请人"
     "不能申请计划"),
    (r"if that person may still ask for plans, the operator gives their line in (?P<s>\S+) the namespace "
     r"'upgrader-plan' and a valid time; otherwise a listed requester makes the plan again with their own key "
     r"\(plan --key\)",
     "如果此人仍可申请计划，请由运维人员在 {s} 中为其所在行加上命名空间 'upgrader-plan' 和有效的时间；否则请由已列出的"
     "申请人用自己的密钥重新制作计划（plan --key）"),
    (r"(?P<f>\S+): the approval is signed by (?P<k>\S+) \((?P<a>[^)]*)\), and access grant (?P<g>\S+) \((?P<p>\S+) "
     r"line (?P<n>\d+), until (?P<u>[^)]+)\) lets that key log in to this account, which holds the operator key "
     r"(?P<o>\S+) that .+: the approver could have asked for the plan themselves \(segregation of duties\); nothing "
     r"was changed",
     "{f}：批准由密钥 {k}（{a}）签署，而访问授权 {g}（{p} 第 {n} 行，有效至 {u}）允许该密钥登录本账户；本账户持有申请"
     "该计划的运维密钥 {o}：批准人可能自己申请了该计划（职责分离）；未做任何改动"),
    (r"(?P<f>\S+): the approval is signed by (?P<k>\S+) \((?P<a>[^)]*)\), and (?P<p>\S+) line (?P<n>\d+) lets the key "
     r"(?P<x>\S+) log in to this account, added while access grant (?P<g>\S+) let that engineer in; this account "
     r"holds the operator key (?P<o>\S+) that .+: the approver could have asked for the plan themselves \(segregation "
     r"of duties\); nothing was changed",
     "{f}：批准由密钥 {k}（{a}）签署，而 {p} 第 {n} 行允许密钥 {x} 登录本账户，这一行是在访问授权 {g} 允许该工程师登录"
     "期间加入的；本账户持有申请该计划的运维密钥 {o}：批准人可能自己申请了该计划（职责分离）；未做任何改动"),
    (r"remove that line from (?P<p>\S+) \(upgrader access list shows every such line; if you added it yourself, "
     r"another engineer approves instead\), make the plan again with your own key, and have it approved again",
     "请从 {p} 中删除这一行（upgrader access list 会列出所有这样的行；如果这一行是您自己加入的，请改由另一位工程师批准），"
     "用您自己的密钥重新制作计划，再请工程师批准"),
    (r"close the grant \(upgrader access revoke (?P<g>\S+)\), make the plan again with your own key, and have it "
     r"approved again", "请先收回授权（upgrader access revoke {g}），用您自己的密钥重新制作计划，再请工程师批准"),
    # api.py: a key file of the account whose key cannot be told, while anyone is let in (attack12r21 H1, fail closed)
    (r"(?P<f>\S+): (?P<k>\S+) looks like a private key of this account, but upgrader cannot tell which key it is "
     r"\((?P<w>[^)]*)\), and (?P<l>.+?) lets an engineer log in to this account: logged in, they could have signed "
     r"this plan with it \(the key (?P<x>\S+)\) and approved it with a key of their own \(segregation of duties\); "
     r"nothing was changed",
     "{f}：{k} 看起来是本账户的私钥，但 upgrader 无法判断它是哪一把密钥（{w:t}），而 {l:t} 允许工程师登录本账户：登录后，"
     "对方可能已用它（密钥 {x}）签署了此计划，再用自己的另一把密钥批准（职责分离）；未做任何改动"),
    (r"put its public key beside it \((?P<p>\S+): ssh-keygen -y -f (?P<k>\S+)\) or move it out of the account's key "
     r"folders, or close the access first, then approve again",
     "请把它的公钥放在旁边（{p}：ssh-keygen -y -f {k}），或把它移出本账户的密钥目录，或先收回访问权限，然后重新批准"),
    (r"encrypted without its \.pub beside it, or damaged", "已加密且旁边没有对应的 .pub，或者已损坏"),
    (r"a PuTTY key file whose Public-Lines cannot be read", "是 PuTTY 密钥文件，但无法读取其 Public-Lines"),
    (r"a private key in a form upgrader does not read, ssh\.com/SECSH or another tool's, without its \.pub",
     "是 upgrader 不读取的格式的私钥（ssh.com/SECSH 或其他工具的格式），旁边没有对应的 .pub"),
    (r"cannot be read \((?P<e>[^)]*)\)", "无法读取（{e}）"),
    (r"more than one private key in one file", "一个文件中有多把私钥"),
    (r"a folder that cannot be read \((?P<e>[^)]*)\)", "是无法读取的目录（{e}）"),
    (r"larger than (?P<n>\d+) MiB", "大于 {n} MiB"),
    (r"(?P<p>\S+) line (?P<n>\d+) \(access grant (?P<g>\S+)\)", "{p} 第 {n} 行（访问授权 {g}）"),
    (r"(?P<p>\S+) line (?P<n>\d+) \(a key added while access grant (?P<g>\S+) was open\)",
     "{p} 第 {n} 行（访问授权 {g} 有效期间加入的密钥）"),
    (r"(?P<p>\S+) line (?P<n>\d+)", "{p} 第 {n} 行"),
    # api.py: the account's key folders are read whole or not at all
    (r"(?P<d>\S+) holds more than the (?P<n>\d+) entries \(its subfolders' included\) upgrader reads to know which "
     r"keys this account holds \(whoever logs in to it can sign with any of them\); nothing was changed",
     "{d} 中的条目（含子目录）超过 upgrader 为判断本账户持有哪些密钥而读取的 {n} 个上限（登录本账户的人可以用其中任何一把"
     "密钥签名）；未做任何改动"),
    (r"remove from (?P<d>\S+) what is not a key, then run the command again", "请从 {d} 中移走不是密钥的文件，然后重新运行命令"),
    (r"(?P<d>\S+) has folders more than (?P<n>\d+) deep \((?P<p>\S+)\), deeper than upgrader reads to know which "
     r"keys this account holds \(whoever logs in to it can sign with any of them\); nothing was changed",
     "{d} 中的目录超过 {n} 层（{p}），超出 upgrader 为判断本账户持有哪些密钥而读取的深度（登录本账户的人可以用其中任何一把"
     "密钥签名）；未做任何改动"),
    (r"move the keys in (?P<p>\S+) up, or out of (?P<d>\S+), then run the command again",
     "请把 {p} 中的密钥移到上层目录或移出 {d}，然后重新运行命令"),
    # customer/access.py, hostagent/access.py: authorized_keys is read whole (attack12r21 H2)
    (r"(?P<p>\S+) is larger than (?P<n>\d+) MiB: upgrader reads the whole file to know who may log in to this "
     r"account \(sshd reads it all\) and refuses rather than read it in part; nothing was changed",
     "{p} 大于 {n} MiB：upgrader 要读取整个文件才能判断谁可以登录本账户（sshd 会读取整个文件），因此拒绝只读取一部分；"
     "未做任何改动"),
    (r"remove from (?P<p>\S+) what is not a key \(edit it by hand\), then run the command again",
     "请从 {p} 中删除不是密钥的内容（手工编辑），然后重新运行命令"),
    (r"(?P<h>[^\s:]+): (?P<p>\S+) is larger than (?P<n>\d+) MiB; is it the right file\? Edit it by hand",
     "{h}：{p} 大于 {n} MiB；这是正确的文件吗？请手工编辑"),
    # hostagent/processes.py: the whole-tree rule for commands run as root (root_command_problems, root_workdir)
    (r"(?P<k>[^:]+?) would run as root in (?P<i>\S+), but (?P<w>.+?)(?: \(and (?P<n>\d+) more\))?: another account "
     r"could change what root runs, sources or acts on; nothing was stopped: give the install to the service account "
     r"\(chown -R; the commands then run as that account\), or make it root's alone \(chown -R root, chmod -R "
     r"go-w\), or start and stop it through a command outside the install \(systemctl\)",
     "{k} 将在 {i} 中以 root 身份执行，但 {w:t}{n:more}：其他账户可以改动 root 执行、引入或操作的内容；没有停止任何服务："
     "请把安装目录交给服务账户（chown -R，命令随之以该账户执行），或让它只归 root 所有（chown -R root，chmod -R go-w），"
     "或通过安装目录之外的命令（systemctl）启动和停止服务"),
    (r"the command (?P<c>.+) was not run: it would run as root in (?P<i>\S+), but (?P<w>.+?): another account could "
     r"change what root runs, sources or acts on",
     "命令 {c} 没有执行：它将在 {i} 中以 root 身份执行，但 {w:t}：其他账户可以改动 root 执行、引入或操作的内容"),
    # the outside-path rule: a path a root command names outside the install must be root's alone
    (r"(?P<k>\S+) \((?P<c>.+)\) would run as root, but (?P<p>/\S+), named in it, is not root's alone: (?P<w>.+?): "
     r"another account could change what root runs or reads; nothing was stopped: make it and every directory above "
     r"it root's and writable by nobody else \(chown root, chmod go-w\), or name a file that is",
     "{k}（{c}）将以 root 身份执行，但其中提到的 {p} 并非只有 root 能改动：{w:t}：其他账户可以改动 root 执行或读取的"
     "内容；没有停止任何服务：请让它及其上面的每一级目录都归 root 所有、且除 root 外无人可写（chown root，chmod go-w），"
     "或改用这样的文件"),
    (r"the command (?P<c>.+) was not run: it would run as root, but (?P<p>/\S+), named in it, is not root's alone: "
     r"(?P<w>.+?): another account could change what root runs or reads",
     "命令 {c} 没有执行：它将以 root 身份执行，但其中提到的 {p} 并非只有 root 能改动：{w:t}：其他账户可以改动 root "
     "执行或读取的内容"),
    # a word of a root command the shell would expand cannot be judged (issue 12, attack12r22 H1, M1)
    (r"(?P<k>\S+) \((?P<c>.+)\) would run as root, but the word (?P<w>.+?) in it cannot be judged as written "
     r"\((?P<y>.+?)\): the shell would turn it into paths the agent does not see, another account's among them; "
     r"nothing was stopped: write it as a plain absolute path",
     "{k}（{c}）将以 root 身份执行，但其中的词 {w} 无法按字面判断（{y:t}）：shell 会把它展开成主机代理看不到的路径，"
     "其中可能有其他账户的文件；没有停止任何服务：请把它写成普通的绝对路径"),
    (r"the command (?P<c>.+) was not run: it would run as root, but the word (?P<w>.+?) in it cannot be judged as "
     r"written \((?P<y>.+?)\)", "命令 {c} 没有执行：它将以 root 身份执行，但其中的词 {w} 无法按字面判断（{y:t}）"),
    # code upgrader does not read in a root command is refused (issue 12, attack12r23 H1)
    (r"(?P<k>\S+) \((?P<c>.+)\) would run as root, but (?P<p>\S+) in it runs code upgrader does not read "
     r"\((?P<y>.+?)\): another account could have root run what it wrote; nothing was stopped: put the code in a "
     r"root-owned script and name that script by its absolute path",
     "{k}（{c}）将以 root 身份执行，但其中的 {p} 会执行 upgrader 不读取的代码（{y:t}）：其他账户可以让 root 执行它写入的"
     "内容；没有停止任何服务：请把这段代码放进 root 所有的脚本，并用绝对路径指明该脚本"),
    (r"the command (?P<c>.+) was not run: it would run as root, but (?P<p>\S+) in it runs code upgrader does not "
     r"read \((?P<y>.+?)\)", "命令 {c} 没有执行：它将以 root 身份执行，但其中的 {p} 会执行 upgrader 不读取的代码（{y:t}）"),
    (r"a shell reading its standard input", "从标准输入读取脚本的 shell"),
    # root programs by list (issue 12, attack12r25)
    (r"a program not on upgrader's list of programs that run only what they are given \((?P<p>.+?)\): sed, gdb, ed, "
     r"vim, tar and the like can run code from their words, a file or their standard input",
     "不在 upgrader 的程序清单上的程序（{p}）：清单上的程序只执行给它的参数；sed、gdb、ed、vim、tar 之类可以执行来自参数、文件或标准输入的代码"),
    (r"a program not found on root's PATH \((?P<p>.+?)\)", "在 root 的 PATH 中找不到的程序（{p}）"),
    (r"a shell function definition: its body and its calls are not read", "shell 函数定义：其函数体和调用都不会被读取"),
    (r"shell syntax a root command may not use \((?P<p>.+)\): only simple commands joined by &&, \|\| and ;, with "
     r"output redirections and < /dev/null",
     "root 命令不能使用的 shell 语法（{p}）：只能是用 &&、|| 和 ; 连接的简单命令，带输出重定向和 < /dev/null"),
    (r"an option of (?P<p>\S+) upgrader does not read exactly \(the command it runs is then not known\)",
     "upgrader 无法精确读取的 {p} 选项（因而不知道它要执行的命令）"),
    (r"a program given its standard input by a pipe or a file, which it may read as code \(a script, an interpreter, "
     r"a shell\): only a listed program may read one",
     "通过管道或文件获得标准输入的程序，它可能把输入当作代码读取（脚本、解释器、shell）：只有清单上的程序可以读取标准输入"),
    (r"a shell builtin that runs its words as code \((?P<p>.+?)\)", "把参数当代码执行的 shell 内建命令（{p}）"),
    # code root's commands wrote, system scripts, variables that load code, systemctl (issue 12, attack12r27 M1, r28)
    (r"(?P<k>\S+) \((?P<c>.+)\) would run as root, but (?P<p>\S+) in it (?P<y>runs a script of the system .+?|runs a "
     r"file from .+?|writes .+?): nothing was stopped: (?P<d>.+)",
     "{k}（{c}）将以 root 身份执行，但其中的 {p} {y:t}：没有停止任何服务：{d:t}"),
    (r"the command (?P<c>.+) was not run: it would run as root, but (?P<p>\S+) in it (?P<y>runs a script of the "
     r"system .+|runs a file from .+|writes .+)", "命令 {c} 没有执行：它将以 root 身份执行，但其中的 {p} {y:t}"),
    (r"runs a script of the system \((?P<p>.+?)\): scripts such as python's timeit.py or pdb run code given in their "
     r"words", "会执行系统自带的脚本（{p}）：python 的 timeit.py、pdb 之类的脚本会执行参数中给出的代码"),
    (r"runs a file from the install's logs/ \((?P<p>.+?)\), where root commands write",
     "会执行安装目录 logs/ 中的文件（{p}），而 root 命令会往那里写入"),
    (r"writes (?P<p>.+?), outside the install's logs/ \((?P<l>.+?)\)", "会写入 {p}，它在安装目录的 logs/（{l}）之外"),
    (r"writes (?P<p>.+?), in the install outside its logs/ \((?P<l>.+?)\)", "会写入 {p}，它在安装目录中、logs/（{l}）之外"),
    (r"a brace", "花括号"),
    (r"writes (?P<p>.+?), which is not root's alone: (?P<w>.+)", "会写入 {p}，它并非只有 root 能改动：{w:t}"),
    (r"make logs/ root's alone, or write nothing there", "请让 logs/ 只归 root 所有，或者不往那里写"),
    (r"runs a file from (?P<t>\S+), where a root command of the same playbook writes (?P<w>\S+): root would run what a "
     r"command wrote, which the approver does not read",
     "会执行 {t} 中的文件，而同一剧本中的 root 命令会写入 {w}：root 将执行命令写入的内容，审批人看不到这些内容"),
    (r"write files elsewhere than where scripts run from, and ship the scripts in the package or as root-owned files",
     "请把文件写到脚本所在目录以外的地方，并把脚本放进软件包或作为 root 所有的文件提供"),
    (r"writes (?P<p>.+?), a file with (?P<n>\d+) names \(hard links\): what it writes lands elsewhere too",
     "会写入 {p}，这个文件有 {n} 个名字（硬链接）：写入的内容也会出现在别处"),
    (r"run the programs upgrader lists, or a root-owned script of your own outside /usr",
     "请使用 upgrader 清单上的程序，或使用放在 /usr 之外、由 root 所有的自有脚本"),
    (r"ship the scripts in the package or as root-owned files outside logs/",
     "请把脚本放进软件包，或作为 logs/ 之外由 root 所有的文件提供"),
    (r"write only under logs/ \(a root command's output is kept in the audit log anyway\), and ship files in the "
     r"package", "只能写到 logs/ 下（root 命令的输出本来就会记入审计日志），文件请放进软件包提供"),
    (r"write to a file of logs/ that has one name", "请写入 logs/ 中只有一个名字的文件"),
    (r"a test of a variable \(-v, -R\), whose name bash evaluates as code", "对变量的测试（-v、-R）：bash 会把变量名当代码求值"),
    (r"printf -v, which sets a variable \(bash evaluates its name as code\)", "printf -v：它会设置变量（bash 会把变量名当代码求值）"),
    (r"a shell builtin that runs its words as code, or sets variables or the umask \((?P<p>.+?)\)",
     "把参数当代码执行、或设置变量或 umask 的 shell 内建命令（{p}）"),
    (r"an option of (?P<p>\S+) upgrader does not read exactly \((?P<o>.+?)\)(?:: only (?P<l>.+))?",
     "upgrader 无法精确读取的 {p} 选项（{o}）"),
    (r"a mode that lets another account write, or runs as another \((?P<p>.+?)\): the path would be changed by what "
     r"root runs next", "允许其他账户写入、或以他人身份运行的权限（{p}）：root 接下来执行的内容可能被改动"),
    (r"an owner other than root \((?P<p>.+?)\): the path would be the other account's to change while root runs what "
     r"follows", "root 以外的属主（{p}）：在 root 执行后续命令时，该路径可被其他账户改动"),
    (r"a \$ or a backquote, which bash evaluates as code in places \(test -v 'a\[\$\(\.\.\.\)\]'\)",
     "$ 或反引号：bash 在某些地方会把它当代码求值（test -v 'a[$(...)]'）"),
    (r"a variable a program may load code by \((?P<p>.+?)\): a root command may set only LANG, LC_\*, TZ, TERM, "
     r"COLUMNS and LINES", "程序可能据以加载代码的变量（{p}）：root 命令只能设置 LANG、LC_*、TZ、TERM、COLUMNS 和 LINES"),
    (r"text written in escapes \((?P<p>.+?)\) the approver does not read as it will be written",
     "用转义序列（{p}）写出的文本：审批人读不到实际写入的内容"),
    (r"a systemctl command upgrader does not read \((?P<p>.+?)\): only (?P<l>.+)",
     "upgrader 不读取的 systemctl 子命令（{p}）：只能是 {l}"),
    (r"a systemctl option upgrader does not read \((?P<p>.+?)\)", "upgrader 不读取的 systemctl 选项（{p}）"),
    (r"a unit named by a path \((?P<p>.+?)\): systemctl would load a unit file upgrader does not read",
     "用路径指定的单元（{p}）：systemctl 会加载 upgrader 不读取的单元文件"),
    (r"a shell option upgrader does not read \((?P<p>.+?)\)", "upgrader 不读取的 shell 选项（{p}）"),
    (r"an option of (?P<k>\S+) \((?P<o>.+?)\): an interpreter may only be given a script file, with no option "
     r"\(-i, -d and the like read code upgrader does not see\)",
     "{k} 的选项（{o}）：解释器只能接受一个脚本文件，不能带任何选项（-i、-d 之类会读取 upgrader 看不到的代码）"),
    (r"a program that runs code upgrader does not read \((?P<p>.+?)\)", "会执行 upgrader 不读取的代码的程序（{p}）"),
    (r"a script under /proc \((?P<p>.+)\): what a process sees, which the agent cannot judge",
     "位于 /proc 下的脚本（{p}）：那是某个进程所见的内容，代理无法判断"),
    (r"a script read from its standard input \((?P<p>.+)\)", "从标准输入读取的脚本（{p}）"),
    (r"a script read from its standard input", "从标准输入读取的脚本"),
    (r"a command built from its standard input \((?P<p>\S+)\)", "由标准输入拼成的命令（{p}）"),
    (r"options read from a file \((?P<p>.+)\)", "从文件读取的选项（{p}）"),
    (r"code given as text \((?P<o>\S+)\)", "以文本给出的代码（{o}）"),
    (r"a module found by name \((?P<o>\S+)\)", "按名称查找的模块（{o}）"),
    (r"an ssh option that runs a command \((?P<o>.+)\)", "会执行命令的 ssh 选项（{o}）"),
    (r"a remote command for ssh", "交给 ssh 的远程命令"),
    (r"an awk program given as text", "以文本给出的 awk 程序"),
    (r"(?P<p>/\S+) holds more than (?P<n>\d+) entries, more than upgrader looks through to judge it",
     "{p} 中的条目超过 {n} 个，超出 upgrader 为判断它而查看的数量"),
    (r"a quote or escape in it does not end, or sh -c scripts nest more than (?P<n>\d+) deep",
     "其中的引号或转义没有结束，或 sh -c 脚本嵌套超过 {n} 层"),
    (r"(?P<a>a glob|a ~ \(home directory\)|a \$ expansion|a command substitution|a brace expansion|"
     r"a process substitution) and (?P<b>.+)", "{a:t}和{b:t}"),
    (r"a glob", "通配符"),
    (r"a ~ \(home directory\)", "~（主目录）"),
    (r"a \$ expansion", "$ 展开"),
    (r"a command substitution", "命令替换"),
    (r"a brace expansion", "花括号展开"),
    (r"a process substitution", "进程替换"),
    (r"(?P<p>/\S+) does not exist, and (?P<w>.+)", "{p} 不存在，而 {w:t}"),
    (r"it is what another process sees, which the agent cannot judge", "它是另一个进程看到的内容，主机代理无法判断"),
    (r"the command reaches it as (?P<r>\S+) from (?P<d>/\S*), and (?P<w>.+)", "命令在 {d} 中以 {r} 到达它，而 {w:t}"),
    (r"a /proc path with \.\. in it leads where the agent cannot judge", "含 .. 的 /proc 路径通向主机代理无法判断的位置"),
    (r"it is what the command's own process holds \((?P<x>[^)]*)\), which the agent cannot judge",
     "它是命令自身进程持有的内容（{x}），主机代理无法判断"),
    (r"it leads through /proc more than (?P<n>\d+) times, which the agent cannot judge",
     "它经由 /proc 超过 {n} 次，主机代理无法判断"),
    (r"(?P<p>/\S+) is owned by uid (?P<u>\d+)", "{p} 属于 uid {u}"),
    (r"(?P<p>/\S+) is owned by (?P<o>.+?) \(mode (?P<m>\d+)\)", "{p} 属于 {o}（权限 {m}）"),
    (r"(?P<p>/\S+) is owned by (?P<o>\S+ \(uid \d+\))", "{p} 属于 {o}"),
    (r"(?P<p>/\S+) may be written by (?P<o>.+?) \(mode (?P<m>\d+)\)", "{p} 可被{o:t}写入（权限 {m}）"),
    (r"(?P<p>/\S+) may be written by (?P<o>.+)", "{p} 可被{o:t}写入"),
    (r"(?P<p>/\S+) is writable by its group \(mode (?P<m>\d+)\)", "{p} 可被其所属组写入（权限 {m}）"),
    (r"(?P<p>/\S+) is writable by its others \(mode (?P<m>\d+)\)", "{p} 可被其他账户写入（权限 {m}）"),
    (r"(?P<p>/\S+) links to (?P<t>\S+), and (?P<w>.+)", "{p} 链接到 {t}，而 {w:t}"),
    (r"(?P<p>/\S+) cannot be examined \((?P<w>[^)]*)\)", "无法检查 {p}（{w}）"),
    (r"everyone", "所有人"),
    (r"its group \(gid (?P<g>\d+)\)", "其所属组（gid {g}）"),
    (r"host (?P<h>\S+): (?P<r>.+)", "主机 {h}：{r:s}"),
    (r"nothing was changed on the host; fix the link or the setting, then plan again",
     "主机上没有做任何改动；请修正该链接或设置，然后重新制作计划"),
    (r"nothing was stopped or started, the host runs (?P<v>\S+) as it was; the (?P<w>rollback|resume) is refused: "
     r"(?P<r>.+)", "没有停止或启动任何服务，主机仍按原样运行 {v}；{w:recovery}被拒绝：{r:t}"),
    # names used inside reasons
    (r"major|minor|maintenance", "{0:level}"),
    (r"external interfaces|the configuration format|monitoring", "{0:change}"),
    (r"(?P<p>/\S+|\S+\.\w+): (?P<rest>.+)", "{p}：{rest:t}"),
    (r"(?P<a>.+?); (?P<b>.+)", "{a:s}；{b:s}"),
    (r"(?P<v>\S+) is listed as affected \((?P<t>.+)\)", "{v} 被列为受影响的版本（{t}）"),
    (r"(?P<v>\S+) is not affected", "{v} 不受影响"),
    # audit/log.py: the note of a verified log whose newest lines no checkpoint signs yet
    (r"(?P<n>\d+) entr(?:y|ies) after the last checkpoint are not covered by a signature \(plans, approvals, or the "
     r"opening of a run that is starting\)",
     "最后检查点之后的 {n} 条记录没有签名保护（计划、批准，或正在开始的运行的开头）"),
    # probes that passed, approvals refused at the start of a run, and their hints
    (r"(?P<f>\S+) clean", "日志 {f} 中没有错误"),
    (r"every file of the backup matches its checksum", "备份中的每个文件都与其校验和一致"),
    (r"requested by the operator", "操作员请求回滚"),
    (r"(?P<f>\S+): approves plan (?P<a>\S+), but this plan is (?P<b>\S+): the plan changed after it was approved "
     r"\(hosts, versions, packages, playbook, policy or window\)",
     "{f}：批准的是计划 {a}，而本计划是 {b}：计划在批准之后被改过（主机、版本、升级包、剧本、策略或维护窗口）"),
    (r"(?P<f>\S+): expired at (?P<t>\S+) \(approved by (?P<w>\S+)\)", "{f}：已于 {t:time} 过期（批准人 {w}）"),
    (r"approval (?P<a>\S+?)\.\.\. was already used on this host by run (?P<r>\S+) \(its lock was taken at "
     r"(?P<t>[^,]+), (?P<f>\S+)\): an approval is good for one run; nothing was locked; have the plan approved again",
     "批准 {a}… 已被运行 {r} 在本主机上用过（它于 {t} 取得了本主机的锁，见 {f}）：一份批准只能用于一次运行；"
     "什么都没有锁定；请重新批准这份计划"),
    (r"(?P<f>\S+): this approval was already used by run (?P<r>\S+) at (?P<t>\S+); an approval is good for one run",
     "{f}：这份批准已被运行 {r} 于 {t:time} 使用过；一份批准只能用于一次运行"),
    (r"(?P<f>\S+): signed by an untrusted key: (?P<d>.+)", "{f}：签名的密钥不受信任：{d:t}"),
    (r"the signing key (?P<k>\S+) is not in (?P<f>\S+)", "签名密钥 {k} 不在 {f} 中"),
    (r"no approval given: an engineer must approve this exact plan before it runs",
     "没有提供批准：运行之前必须由一位工程师批准这份计划"),
    (r"have the new plan approved", "请让新的计划获得批准"),
    (r"ask for a new approval", "请申请新的批准"),
    (r"ask for a new one", "请申请新的批准"),
    # hostagent/hosttrust.py: a committed run's rollback after root's rollback_hours
    (r"run (?P<r>\S+) committed here (?P<h>[\d.]+) hours ago, longer than rollback_hours \((?P<n>[^)]+)\) in "
     r"(?P<f>\S+) allows: this host no longer admits its rollback \((?P<o>\w+)\); nothing was changed\. A person "
     r"restores the old version by hand from the run's backup \((?P<b>[^)]+)\), or root raises rollback_hours there",
     "运行 {r} 已于 {h} 小时前在本机提交，超过了 {f} 中 rollback_hours（{n} 小时）允许的时限：本机不再接受它的回滚"
     "（{o}）；未做任何改动。请由人工从该运行的备份（{b}）手动恢复旧版本，或由 root 在该文件中调大 rollback_hours"),
    # hostagent/hosttrust.py: an unfinished run's rollback after root's rollback_hours (and the run's own hour)
    (r"run (?P<r>\S+) was installed here (?P<h>[\d.]+) hours ago and never finished, longer than rollback_hours "
     r"\((?P<n>[^)]+)\) in (?P<f>\S+) allows \(plus (?P<g>\d+) hour for the run itself\): this host no longer admits "
     r"its rollback \((?P<o>\w+)\); nothing was changed\. A person restores the old version by hand from the run's "
     r"backup \((?P<b>[^)]+)\), or root raises rollback_hours there",
     "运行 {r} 已于 {h} 小时前在本机安装且从未结束，超过了 {f} 中 rollback_hours（{n} 小时，另加运行本身的 {g} 小时）"
     "允许的时限：本机不再接受它的回滚（{o}）；未做任何改动。请由人工从该运行的备份（{b}）手动恢复旧版本，或由 root "
     "在该文件中调大 rollback_hours"),
    # cli/__init__.py: root's default home in another account's login directory (sudo keeps HOME)
    (r"the default home (?P<h>.+) is in (?P<d>.+), which belongs to (?P<o>.+), and upgrader runs as root: its runs, "
     r"audit log and keys are never kept in another account's directory",
     "默认的数据目录 {h} 位于 {d}，该目录属于 {o}，而 upgrader 以 root 身份运行：运行记录、审计日志和密钥绝不保存在其他账户的目录中"),
    (r"give --home DIR \(a directory of root's\), or run it with sudo -H \(root's own login directory\)",
     "请用 --home DIR 指定一个属于 root 的目录，或者用 sudo -H 运行（使用 root 自己的主目录）"),
    # audit verify: a line the controller wrote that the log's own lines or the approvers' file contradict
    (r"run (?P<r>\S+) names approver (?P<n>\S+) with key (?P<k>\S+), but in the approvers' allowed signers (?P<f>\S+) "
     r"that key is listed only as (?P<l>.+): the approver's name was written by the controller",
     "运行 {r} 记的审批人是 {n}（密钥 {k}），但审批人的允许签名人文件 {f} 中该密钥只登记为 {l}：审批人的名字是控制端写的"),
    (r"run (?P<r>\S+) ends with host (?P<h>\S+) (?P<a>\S+), but that host's host_finished line in the run says "
     r"(?P<b>\S+): the run's end was edited",
     "运行 {r} 的结束行说主机 {h} {a:status}，而该主机在本次运行中的 host_finished 行说 {b:status}：运行的结束行被改过"),
    (r"run (?P<r>\S+) ends with host (?P<h>\S+) (?P<a>\S+), but no host_finished line of the run \(or of an "
     r"earlier part of it\) ends that host so: the run's end was edited",
     "运行 {r} 的结束行说主机 {h} {a:status}，而本次运行（及其之前的部分）没有任何 host_finished 行这样结束该主机：运行的结束行被改过"),
    (r"run (?P<r>\S+) ends with exit code (?P<c>\S+), but its hosts' outcomes \((?P<o>[^)]*)\) give (?P<d>\S+): the "
     r"run's end was edited",
     "运行 {r} 的结束行说退出码为 {c}，而各主机的结果（{o}）得出的是 {d}：运行的结束行被改过"),
    (r"run (?P<r>\S+) names approval (?P<d>\S+), which run (?P<f>\S+) \(line (?P<l>\d+)\) spent when it took a "
     r"host's lock: an approval is used once, upgrader refuses it again \(a made-up or replayed run\)",
     "运行 {r} 用了批准 {d}，而运行 {f}（第 {l} 行）取得主机的锁时已用掉它：一份批准只能用一次，upgrader 会再次拒绝它"
     "（编造或重放的运行）"),
    # audit verify: a line whose data upgrader never writes so (audit/log.py _data_problem; attack20r11 M3, M4)
    (r"not an event upgrader writes: (?P<d>.+)", "不是 upgrader 写出的事件：{d:t}"),
    (r"its (?P<e>\S+) line names no host \('hosts' is (?P<v>.*)\): upgrader opens a run, resume or rollback only "
     r"for at least one host",
     "该 {e} 行没有列出任何主机（'hosts' 为 {v}）：upgrader 只为至少一台主机开始运行、续跑或回滚"),
    (r"its (?P<e>\S+) line names an approval without its digest \(64 hex digits\): (?P<v>.*); upgrader names "
     r"every approval it accepts by its digest",
     "该 {e} 行记的批准没有摘要（64 位十六进制）：{v}；upgrader 接受的每份批准都以其摘要记录"),
    (r"its (?P<e>\S+) line names host\(s\) (?P<h>.+), which run (?P<r>\S+) does not have: upgrader resumes or rolls "
     r"back only a run's own hosts",
     "该 {e} 行列出了运行 {r} 没有的主机 {h}：upgrader 只续跑或回滚一次运行自己的主机"),
    (r"its (?P<e>\S+) line's outcome of host (?P<h>\S+) is (?P<v>.*), not an outcome upgrader writes",
     "该 {e} 行中主机 {h} 的结果为 {v}，不是 upgrader 会写的结果"),
    (r"its (?P<e>\S+) line's '(?P<w>[^']+)' is (?P<v>.*), not an entry upgrader writes there",
     "该 {e} 行的 '{w}' 为 {v}，不是 upgrader 会在此写入的条目"),
    *[(r"its (?P<e>\S+) line's '(?P<w>[^']+)' is (?P<v>.*), not " + re.escape(en), "该 {e} 行的 '{w}' 为 {v}，不是" + zh)
      for en, zh in (("text or null", "文本或 null"), ("text", "文本"), ("an object or null", "对象或 null"),
                     ("an object", "对象"), ("a list", "列表"), ("a number", "数字"), ("a whole number", "整数"),
                     ("true, false or null", "true、false 或 null"))],
    (r"its host_finished line's outcome (?P<v>.*) is not an outcome upgrader writes",
     "该 host_finished 行的结果 {v} 不是 upgrader 会写的结果"),
    (r"its host_finished line ends host (?P<h>\S+) needs_person in run (?P<r>\S+), whose preflight there failed "
     r"\((?P<k>.*)\): upgrader ends a host whose preflight failed so only when its lock was held by another run or the "
     r"host was lost \(locked, unreachable\)",
     "该 host_finished 行称运行 {r} 在主机 {h} 上以 needs_person 结束，而该运行在那里的预检失败（{k}）：只有在主机的锁被"
     "另一次运行持有或主机失联（locked、unreachable）时，upgrader 才会这样结束预检失败的主机"),
    # audit verify: a run whose first line is no opening event (attack20r15 M2)
    (r"an event of run (?P<r>\S+) that never started: its first line is (?P<e>\S+), but upgrader opens a run with "
     r"run_started, resume_requested or rollback_requested before any other line of it",
     "运行 {r} 的事件，而该运行从未开始：它的第一行是 {e}，而 upgrader 总是先写 run_started、resume_requested 或 "
     "rollback_requested 开始一次运行，再写它的其他行"),
    # audit verify: a line of a run after a later part of it opened, a run event with no run (attack20r16 H1, M1)
    (r"a line of run (?P<r>\S+) after line (?P<l>\d+) opened (?P<p>\S+), a later part of that run \(a resume or "
     r"rollback starts only once the run has stopped, so none of the run's own lines can follow its opening\)",
     "运行 {r} 的一行出现在第 {l} 行开始该运行的后续部分 {p} 之后（恢复或回滚只在运行停止后才开始，运行自己的行不可能出现在"
     "其开始行之后）"),
    (r"a (?P<e>\S+) line with no run \(upgrader writes every run, host or phase event with the id of its run\)",
     "一条没有运行编号的 {e} 行（upgrader 写出的每个运行、主机或阶段事件都带有其运行编号）"),
    (r"a witness_missing line names only the host that did not record a checkpoint and that checkpoint",
     "witness_missing 行只写明没有记录检查点的主机和该检查点"),
    # audit verify: a resume after a canary of a run that did not pause, a first run's end past a failed preflight
    (r"its resume_requested line goes on after a canary \(after (?P<a>.*)\), but run (?P<r>\S+) did not pause after a "
     r"healthy canary \(its run_finished line leaves no host waiting\): upgrader goes on after a canary only with the "
     r"hosts a paused run left waiting",
     "该 resume_requested 行称在金丝雀之后继续（after {a}），但运行 {r} 并未在健康的金丝雀之后暂停（其 run_finished 行没有"
     "留下等待中的主机）：upgrader 只在金丝雀之后继续暂停的运行留下等待的主机"),
    (r"its resume_requested line goes on after a canary \(after (?P<a>.*)\), but run (?P<r>\S+) already went on after "
     r"its canary \(an earlier continuation of it finished\): upgrader goes on after a canary once",
     "该 resume_requested 行称在金丝雀之后继续（after {a}），但运行 {r} 已经在金丝雀之后继续过（它更早的一次继续已经结束）："
     "upgrader 只在金丝雀之后继续一次"),
    (r"its resume_requested line goes on after a canary with host (?P<h>\S+), which run (?P<r>\S+) ended (?P<o>\S+), "
     r"not waiting: upgrader goes on after a canary only with the hosts a paused run left waiting",
     "该 resume_requested 行称在金丝雀之后继续主机 {h}，而运行 {r} 已将该主机以 {o} 结束，并非等待中：upgrader 只在"
     "金丝雀之后继续暂停的运行留下等待的主机"),
    (r"its host_finished line ends host (?P<h>\S+) (?P<o>\S+) in run (?P<r>\S+), whose preflight there failed: "
     r"upgrader ends a host so only past a preflight that went well \(under its lock\)",
     "该 host_finished 行称运行 {r} 在主机 {h} 上以 {o} 结束，而该运行在那里的预检失败了：upgrader 只有在预检通过（持有主机的锁）"
     "之后才会这样结束一台主机"),
    (r"its host_finished line ends host (?P<h>\S+) (?P<o>\S+) in run (?P<r>\S+), whose preflight there never finished: "
     r"upgrader ends a host so only past a preflight that went well \(under its lock\)",
     "该 host_finished 行称运行 {r} 在主机 {h} 上以 {o} 结束，而该运行在那里的预检从未结束：upgrader 只有在预检通过（持有主机的锁）"
     "之后才会这样结束一台主机"),
    (r"(?P<a>.+?) and (?P<b>.+)", "{a:s}和{b:s}"),
]
_COMPILED = [(re.compile(p), t) for p, t in _FORMS]
_FIELD = re.compile(r"{(\w+)(?::(\w+))?}")


def _fill(template: str, m: re.Match[str], depth: int) -> str:
    def one(f: re.Match[str]) -> str:
        name, how = f.group(1), f.group(2)
        value = m.group(int(name)) if name.isdigit() else (m.group(name) or "")
        if how == "t":
            return _translate(value, depth + 1) or value
        if how == "s":  # strict: a half left in English makes the whole form not apply (no mixed sentence)
            found = _translate(value, depth + 1)
            if found is None:
                raise _NotThisForm
            return found
        if how == "day":
            return _DAYS.get(value, value)
        if how == "zone":
            return "北京时间" if value == DEFAULT_ZONE else value
        if how == "time":
            return shown_time(value, DEFAULT_ZONE, "zh")
        if how == "kind":
            return {"full": "完整包", "patch": "补丁"}.get(value, value)
        if how == "n":
            return "空" if value == "none" else value.replace(" lines", " 行")
        if how == "not":
            return "不满足 " if value else ""
        if how == "metric":
            return _METRICS.get(value, value)
        if how == "dir":
            return "高于" if value == "above" else "低于"
        if how == "level":
            return _LEVELS.get(value, value)
        if how == "change":
            return _CHANGES.get(value, value)
        if how == "recovery":
            return "回滚" if value == "rollback" else "恢复运行"
        if how == "more":  # "(and 2 more)" after the first path of a list
            return f"（另有 {value} 处）" if value else ""
        if how == "proofs":  # "process (pid 7 alive), tcp (port 8080 open)": each probe's detail translated
            return "，".join(f"{name}（{_translate(detail, depth + 1) or detail}）" for name, detail in
                            re.findall(r"([\w.-]+) \((.*?)\)(?:, (?=[\w.-]+ \()|$)", value))
        return value
    return _FIELD.sub(one, template)


class _NotThisForm(Exception):
    """A strict field of a generic form could not be translated: try the next form."""


def _translate(reason: str, depth: int = 0) -> str | None:
    if depth > 6:
        return None
    for pattern, template in _COMPILED:
        m = pattern.fullmatch(reason)
        if m:
            try:
                return _fill(template, m, depth)
            except _NotThisForm:
                continue
    return None


def translate(reason: str, lang: str) -> str:
    """``reason`` in ``lang``: English as it is; Chinese by its form, else as it is behind "原文："."""
    reason = str(reason)
    if lang != "zh" or not reason:
        return reason
    found = _translate(reason.strip())
    return found if found is not None else f"{UNTRANSLATED}：{reason}"


_CAUSES = {"preflight": "预检未通过，升级没有开始", "backup": "准备新版本或备份失败", "stop": "停止服务失败",
           "install": "安装新版本失败", "start": "新版本启动失败：启动命令没有成功",
           "observe": "新版本启动失败：健康检查没有通过", "cancel": "操作员已取消",
           "rollback": "回滚失败"}
_CAUSES_EN = {"preflight": "preflight failed, the upgrade did not start", "backup": "staging or the backup failed",
              "stop": "the service could not be stopped", "install": "installing the new version failed",
              "start": "the new version did not start: its start command failed",
              "observe": "the new version did not start: its health checks failed", "cancel": "cancelled by the operator",
              "rollback": "the rollback failed"}


_PROBES: list[tuple[str, str]] = [
    (r"pid (?P<p>\S+) not running", "进程没有运行"),
    (r"no pid file (?P<f>\S+): not running, or running without writing it \(cannot tell\)",
     "没有 pid 文件 {f}：进程没有运行，或在运行但没有写 pid 文件（无法判断）"),
    (r"port (?P<n>\d+) closed", "端口 {n} 没有打开"),
    (r"(?P<u>\S+) answered (?P<s>\d+), expected (?P<w>\S+)", "{u} 返回 {s}，应为 {w}"),
    (r"(?P<u>\S+) answered .+, expected .+", "{u} 返回的内容与预期不符"),
    (r"(?P<u>\S+) answer lacks .+", "{u} 返回的内容缺少预期的文字"),
    (r"http probe: .*(?:Connection refused|timed out).*", "HTTP 无法连接"),
    (r"(?P<k>\w+) probe: (?P<d>.+)", "{k} 检查出错：{d}"),
    (r"(?P<f>\S+) has no line matching .+ yet", "日志 {f} 中还没有出现预期的行"),
    (r"command exited (?P<c>\S+)", "检查命令退出码 {c}"),
    (r"(?P<f>[^\s:]+): (?P<line>.+)", "日志 {f} 报错“{line}”"),
]
_PROBES_COMPILED = [(re.compile(p), t) for p, t in _PROBES]


def _probe_failures(detail: str) -> str | None:
    """"process: pid None not running; tcp: port 8080 closed; log: logs/x.log: ERROR ..." in Chinese, the log's
    own words (the likeliest real cause) first; None when the text is not such a list."""
    found: list[tuple[int, str]] = []
    for part in re.split(r"; (?=[\w.-]+: )", detail):
        name, sep, said = part.partition(": ")
        if not sep:
            return None
        for pattern, template in _PROBES_COMPILED:
            m = pattern.fullmatch(said.strip())
            if m:
                text = _fill(template, m, 0)
                found.append((0 if text.startswith("日志") and "报错" in text else 1, text))
                break
        else:
            return None
    ordered = [text for _, text in sorted(found, key=lambda x: x[0])]
    return "；".join(dict.fromkeys(ordered)) if ordered else None


def failure(detail: str, lang: str) -> str:
    """A failed phase's own message (``never healthy after start: process: ...``) in ``lang``, the probes in
    plain words, the log's own line first."""
    if lang != "zh":
        return detail
    when, sep, probes = str(detail).partition(": ")
    plain = _probe_failures(probes) if sep else None
    if plain is not None and _translate(when):
        return f"{_translate(when)}：{plain}"
    return translate(detail, lang)


def cause(text: str, lang: str, technical: bool = True) -> str:
    """A failure cause ("observe: never healthy after start: tcp 18080: ...") summarised first in plain words
    (Chinese: "新版本启动失败：健康检查没有通过"), the technical detail after."""
    text = str(text or "").strip()
    phase, sep, rest = text.partition(": ")
    key = phase if sep else ""
    if text.startswith("cancelled by the operator"):
        key, rest = "cancel", ""
    summary = (_CAUSES if lang == "zh" else _CAUSES_EN).get(key)
    if summary is None:
        return translate(text, lang)
    if not rest:
        return summary
    if lang == "zh":
        when, sep2, probes = rest.partition(": ")
        plain = _probe_failures(probes) if key == "observe" and sep2 else None
        if plain is not None:
            head = "新版本启动后出现故障" if when.startswith("healthy at first") else "新版本启动失败"
            if not technical:  # every part already said in Chinese: no English after it
                return f"{head}：{plain}（健康检查{_translate(when) or when}）"
            return f"{head}：{plain}（健康检查{_translate(when) or when}；技术细节：{rest}）"
        detail = translate(rest, lang)
        if not technical:
            return f"{summary}（{failure(rest, lang)}）"
        return f"{summary}（技术细节：{detail.removeprefix(UNTRANSLATED + '：')}）"
    return f"{summary} (technical detail: {rest})"


#: the words of statuses, phases, failure kinds, events, rules and verification problems, in Chinese (a report's
#: badges and names); ``word`` falls back to the word as it is
WORDS: dict[str, dict[str, str]] = {
    "status": {"ok": "正常", "pass": "通过", "passed": "通过", "fail": "不通过", "failed": "失败", "skip": "跳过",
               "warn": "警告", "committed": "已提交", "rolled_back": "已回滚", "rollback": "回滚",
               "refused": "已拒绝", "allowed": "允许", "approved": "已批准", "accepted": "已接受",
               "needs_person": "需要人工处理", "unreachable": "无法连接", "error": "出错", "restored": "已恢复",
               "waiting": "等待中", "superseded": "已被取代", "running": "进行中", "started": "已开始",
               "cancelled": "已取消", "interrupted": "已中断", "unchanged": "未变化", "true": "是", "false": "否",
               "yes": "是", "no": "否", "revoked": "已撤销", "granted": "已授权", "broken": "已解除",
               "cannot": "无法判断", "unknown": "未知"},
    "phase": {"preflight": "预检", "backup": "备份", "stop": "停止", "install": "安装", "start": "启动",
              "observe": "观察", "verify": "验证", "verify_backup": "校验备份", "rollback": "回滚", "commit": "提交", "cancel": "取消",
              "hook:pre": "前置钩子", "hook:post": "后置钩子", "hook:pre_stop": "停止前钩子",
              "hook:post_start": "启动后钩子"},
    "failure": {"unhealthy": "不健康", "failed": "失败", "bad_input": "输入无效", "unsafe_path": "路径不安全",
                "too_many_files": "产品文件过多",
                "no_space": "磁盘空间不足", "unreachable": "无法连接", "locked": "已被锁定", "timeout": "超时",
                "cancelled": "已取消", "drift": "文件被改动", "not_locked": "未持有主机锁",
                "run_kind": "运行类型与主机记录不符", "never_locked": "该运行从未取得主机锁"},
    "event": {"plan_created": "创建计划", "approval_created": "签署批准", "approval_refused": "拒绝批准",
              "approval_accepted": "接受批准", "run_started": "开始运行", "run_finished": "运行结束",
              "run_refused": "拒绝运行", "run_interrupted": "运行中断", "phase_started": "阶段开始",
              "phase_finished": "阶段结束", "host_started": "主机开始", "host_finished": "主机完成", "rollback_started": "开始回滚",
              "rollback_requested": "请求回滚", "resume_requested": "请求续跑", "checkpoint": "签名检查点",
              "access_granted": "授予访问", "access_revoked": "撤销访问", "access_record_restored": "写回授权记录",
              "locks_broken": "解除锁",
              "guide_run": "向导运行", "guide_interrupted": "向导中断", "witness_missing": "主机未记录检查点"},
    "rule": {"same_product": "同一产品", "newer": "版本更新", "same_line": "同一产品线", "free_levels": "免费级别",
             "declared_changes": "声明的变更", "maintenance_contract": "维保合同", "patch_requires": "补丁适用范围",
             "approval": "批准", "installed_version": "已装版本", "package": "升级包", "window": "维护窗口",
             "manual_changes": "人工改动", "free_disk": "磁盘空间", "health_checks": "健康检查",
             "host_trust_root": "主机信任根", "install_dir": "安装目录", "lock": "锁", "log": "日志",
             "port": "端口", "process": "进程", "version": "版本", "advisory": "安全公告",
             "non_ascii_names": "非 ASCII 文件名"},
    "problem": {"head mismatch": "检查点链头不符", "rewritten": "已被改写", "truncated": "末尾被截断",
                "bad signature": "签名无效", "edited": "内容被修改", "forged": "伪造的记录", "missing": "缺少记录",
                "reordered": "顺序被打乱", "torn": "行不完整", "unsigned": "运行没有签名检查点"},
}


def word(kind: str, value: object, lang: str) -> str:
    """A status, phase, failure kind, event, rule or verification problem (``kind``) in ``lang``; as it is in
    English or when unknown."""
    text = "" if value is None else str(value)
    if lang != "zh":
        return text
    return WORDS.get(kind, {}).get(text.lower() if kind != "phase" else text, text)


def refusal(text: str, lang: str) -> str:
    """A refusal as recorded (``reason`` then ``\\n  -> hint``) in ``lang``: each part by its form."""
    if lang != "zh":
        return str(text)
    reason, sep, hint = str(text).partition("\n  -> ")
    return translate(reason, lang) + (f"；建议：{translate(hint, lang)}" if sep else "")

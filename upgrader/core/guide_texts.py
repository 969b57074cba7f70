"""Every word ``upgrader guide`` shows, in English and Simplified Chinese, in one catalog.

``Messages`` looks a key up in the language ``upgrader.core.language.resolve_lang`` chose and fills its
``{fields}``. The texts hold rich markup; the fields never do: every field is escaped (a path or a
reason holding ``[/bold]`` is shown as written), except a ``Markup`` value (a text this catalog
rendered, a coloured mark). Data the tool cannot translate (versions, paths, the policy's own
reasons) is shown as it is, after the plain-words meaning. This module does no I/O and imports no
rich: ``Messages.plain`` (errors' texts) is here, the markup rendering (``Messages(lang)("key")``,
fields escaped) is ``upgrader.cli.guide_messages``.
"""

from __future__ import annotations

__all__ = ["MESSAGES", "RULES", "PHASES", "Messages", "Markup"]

# key -> (English, Chinese)
MESSAGES: dict[str, tuple[str, str]] = {
    "title": ("[bold]upgrader guide[/bold]: a guided upgrade of the middleware on this host",
              "[bold]upgrader 升级向导[/bold]：引导您升级本机上的中间件"),
    "intro": ("Every step is explained and every risky step is asked first. The default answer (in capitals) "
              "is always the safe one. Ctrl-C before the service is stopped changes nothing; after it, the old "
              "version is restored.",
              "每一步都会说明；有风险的步骤都会先征求您的同意。默认答案（大写字母）始终是安全的选择。"
              "在停止服务之前按 Ctrl-C 不会改动任何东西；停止服务之后按 Ctrl-C，会恢复旧版本。"),
    "step": ("[bold cyan]Step {n}/{total}: {title}[/bold cyan]", "[bold cyan]第 {n}/{total} 步：{title}[/bold cyan]"),
    "step_find": ("the installed product", "已安装的产品"),
    "step_policy": ("the package and the version policy", "升级包与版本策略"),
    "step_approval": ("the engineer's approval and the service window", "工程师审批与服务时间窗口"),
    "step_checks": ("preflight checks and health inspection", "预检与健康巡检"),
    "step_backup": ("your business data", "您的业务数据"),
    "step_access": ("help from the engineer (remote access)", "工程师远程协助（访问授权）"),
    "step_plan": ("the plan", "升级计划"),
    "step_run": ("the upgrade", "执行升级"),
    # step 1
    "searching": ("Looking for installed products in: {places}", "正在以下位置查找已安装的产品：{places}"),
    "found_one": ("Found {product} in {dir}", "找到 {product}，位于 {dir}"),
    "found_many": ("Found several installs:", "找到多个安装："),
    "found_none": ("No installed product was found in the usual places.", "在常用位置没有找到已安装的产品。"),
    "ask_use_found": ("Upgrade this install?", "升级这个安装吗？"),
    "ask_choose": ("Which one? Type its number", "请选择要升级的安装，输入编号"),
    "ask_dir": ("Type the install directory (empty to quit)", "请输入安装目录（直接回车退出）"),
    "not_install": ("{dir} does not hold a product upgrader knows (no playbook's files are there)",
                    "{dir} 中没有 upgrader 认识的产品（找不到任何剧本所需的文件）"),
    "yes_needs_dir": ("several or no installs found: with --yes give --install-dir",
                      "找到多个安装或没有找到安装：使用 --yes 时请用 --install-dir 指定安装目录"),
    "installed": ("Installed: [bold]{product} {version}[/bold] in {dir} (playbook {playbook})",
                  "已安装：[bold]{product} {version}[/bold]，目录 {dir}（剧本 {playbook}）"),
    "plan_given": ("Using the plan {file} (digest {digest}…), made {created} by {requester}",
                   "使用升级计划 {file}（摘要 {digest}…），由 {requester} 于 {created} 生成"),
    # step 2
    "package": ("Package: {product} {version} ({kind}), sha256 {sha} matches the signed catalog (serial {serial})",
                "升级包：{product} {version}（{kind}），sha256 {sha} 与已签名的目录（序号 {serial}）一致"),
    "kind_full": ("full package", "完整包"),
    "kind_patch": ("patch", "补丁"),
    "decision_allowed": ("The version policy [bold green]ALLOWS[/bold green] {current} → {target}:",
                         "版本策略[bold green]允许[/bold green] {current} → {target}："),
    "decision_refused": ("The version policy [bold red]REFUSES[/bold red] {current} → {target}:",
                         "版本策略[bold red]不允许[/bold red] {current} → {target}："),
    "rule_line": ("  {mark} {name}: {meaning}", "  {mark} {name}：{meaning}"),
    "rule_detail": ("      ({reason})", "      （{reason}）"),
    "status_pass": ("passed", "通过"),
    "status_fail": ("NOT met", "不满足"),
    "status_skip": ("not checked", "未检查"),
    "status_warn": ("note", "注意"),
    "refused_end": ("Nothing was changed. This upgrade cannot be done as a free maintenance upgrade; "
                    "ask your engineer what to do (exit 3).",
                    "未做任何改动。此次升级不能作为免费的维护升级进行，请联系您的工程师（退出码 3）。"),
    # step 3
    "window_inside": ("Service window: [green]now is inside it[/green] ({reason})",
                      "服务时间窗口：[green]现在在窗口内[/green]（{reason}）"),
    "window_outside": ("Service window: [yellow]now is OUTSIDE it[/yellow] ({reason})",
                       "服务时间窗口：[yellow]现在在窗口外[/yellow]（{reason}）"),
    "window_unknown": ("Service window: [yellow]cannot tell[/yellow] ({reason})",
                       "服务时间窗口：[yellow]无法判断[/yellow]（{reason}）"),
    "window_rule_allow": ("The policy allows upgrades outside the window.", "策略允许在窗口外升级。"),
    "window_rule_after": ("Outside it, the approval must be made for after hours (approve --after-hours).",
                          "在窗口外升级，需要工程师做“非工作时间”审批（approve --after-hours）。"),
    "window_rule_refuse": ("The policy refuses upgrades outside it.", "策略不允许在窗口外升级。"),
    "no_approval": ("No approval was given. The plan for this upgrade is written to:\n  [bold]{plan}[/bold]\n"
                    "Send this file to your engineer. After they approve it they send you an approval file; "
                    "then run:\n  [bold]{again}[/bold]\nNothing was changed (exit 4).",
                    "没有提供审批文件。本次升级的计划已写入：\n  [bold]{plan}[/bold]\n"
                    "请把这个文件发给您的工程师。工程师审批后会发给您一个审批文件，然后运行：\n"
                    "  [bold]{again}[/bold]\n未做任何改动（退出码 4）。"),
    "approval_ok": ("Approval: [green]valid[/green], by {approver} (key {key}), until {expires}{after}",
                    "审批：[green]有效[/green]，审批人 {approver}（密钥 {key}），有效期至 {expires}{after}"),
    "after_hours": (", pre-booked for after hours", "，已预约非工作时间"),
    "approval_refused": ("The approval cannot be used: {reason}\nNothing was changed (exit 4).",
                         "审批不能使用：{reason}\n未做任何改动（退出码 4）。"),
    "audit_key_unlisted": ("your key {fp} is not listed in {file}, so nobody could tell your plans from an "
                           "engineer's own; nothing was written",
                           "您的密钥 {fp} 没有登记在 {file} 中，无法区分您的计划与工程师本人的计划；未写入任何东西"),
    "audit_key_unlisted_hint": ("the owner of that file adds the line shown above, then run the guide again",
                                "请由该文件的负责人加入上面显示的那一行，然后重新运行向导"),
    "approval_key_untrusted": ("The approval is signed by key {fp}, which {file} does not list. allowed_signers is a "
                               "trust root: the guide never adds keys to it. If this is your engineer's key (check the "
                               "fingerprint with them by phone), the owner of {file} adds this line, then run the guide "
                               "again: {line}",
                               "该审批由密钥 {fp} 签署，但 {file} 中没有这个密钥。allowed_signers 是信任根，向导从不向其中"
                               "添加密钥。如果这确实是您的工程师的密钥（请通过电话与工程师核对指纹），请由 {file} 的负责人"
                               "加入下面这一行，然后重新运行向导：{line}"),
    "approval_other_plan": ("the approval {file} is for plan {digest}…, which is not in {dir}",
                            "审批文件 {file} 对应的计划 {digest}… 不在 {dir} 中"),
    "approval_other_plan_hint": ("give the plan file your engineer sent with --plan PLAN",
                                 "请用 --plan PLAN 指定工程师发给您的计划文件"),
    # step 4
    "check_line": ("  {mark} {name}: {reason}", "  {mark} {name}：{reason}"),
    "still_current": ("The host still runs {version}, as the plan expects.", "本机仍在运行计划所预期的版本 {version}。"),
    "stale": ("the host now runs {version}, the plan was made for {planned}", "本机当前运行 {version}，但计划是按 {planned} 制定的"),
    "stale_hint": ("make a new plan: run upgrader guide without --plan", "请重新生成计划：不带 --plan 运行 upgrader guide"),
    "inspection_none": ("Health inspection: not available in this version of upgrader (skipped).",
                        "健康巡检：此版本的 upgrader 尚未提供（已跳过）。"),
    "inspection_ok": ("Health inspection: {summary}", "健康巡检：{summary}"),
    "inspection_clean": ("no warnings", "没有警告"),
    "inspection_count": ("{n} warning(s), shown below (they do not stop the upgrade; tell your engineer)",
                         "{n} 条警告，见下（不会阻止升级；请告知您的工程师）"),
    "inspection_warn": ("  ! {text}", "  ! {text}"),
    "inspection_failed": ("Health inspection could not run: {error} (the upgrade does not depend on it)",
                          "健康巡检无法运行：{error}（不影响升级本身）"),
    # step 4: health checks proven on the running version, variables read from its configuration (probe_proof)
    "vars_read": ("Read from the configuration: {name} = {value} ({file})", "从配置文件读取：{name} = {value}（{file}）"),
    "vars_given": ("{name} = {used}, as given (inventory or --var); {file} says {value}",
                   "{name} = {used}（按清单或 --var 指定）；{file} 中为 {value}"),
    "vars_default": ("{name} = {used}: the playbook's default ({file}: {error})",
                     "{name} = {used}：剧本默认值（{file}：{error}）"),
    "probes_proven": ("Health checks proven on the running {version} before anything is stopped: {n} pass",
                      "健康检查已在停止服务之前、在当前运行的 {version} 上验证：{n} 项通过"),
    "probe_line": ("  {mark} {probe}: {detail}", "  {mark} {probe}：{detail}"),
    "probe_log_later": ("judged on what the new version writes after start", "在新版本启动后根据其新写入的日志判断"),
    "probe_unproven": ("the health check(s) {probe} fail on the running version {version}: they would fail "
                       "after the upgrade too and roll a good upgrade back, so upgrader stopped nothing",
                       "健康检查 {probe} 在当前运行的版本 {version} 上就不通过：升级后同样不会通过，"
                       "会把成功的升级回滚，因此 upgrader 没有停止任何服务"),
    "probe_refused": ("[bold red]Refused before stop:[/bold red] {text}.", "[bold red]在停止服务之前拒绝执行：[/bold red]{text}。"),
    "probe_fix": ("  Likely fix: {fix}.", "  可能的解决办法：{fix}。"),
    "probe_var_hint": ("To give a value yourself, add --var NAME=VALUE to the upgrader guide command (it wins over "
                       "the value read from the configuration); nothing on this host was changed.",
                       "如需自行指定，请在 upgrader guide 命令后加上 --var 名称=值（优先于从配置文件读取的值）；"
                       "本机没有任何改动。"),
    "fix_process": ("the pid file {pid_file} is missing or names no running process: is the service running? (a "
                    "stock Tomcat writes none unless CATALINA_PID is set in bin/setenv.sh)",
                    "进程号文件 {pid_file} 不存在或其中的进程没有运行：服务在运行吗？（标准 Tomcat 只有在 "
                    "bin/setenv.sh 中设置了 CATALINA_PID 才会写这个文件）"),
    "fix_foreign_pid": ("the pid file {pid_file} names a process that is not the service's own (another account's, "
                        "or one started after the file was written), which the stop command would signal: nothing "
                        "was stopped; put the service's own pid back in {pid_file} (or restart the service so that "
                        "it writes it), or stop the service by hand, then run again",
                        "进程号文件 {pid_file} 中的进程不是该服务自己的（属于其他账户，或在该文件写入之后才启动），"
                        "停止命令会向它发信号：没有停止任何东西；请把服务自己的进程号写回 {pid_file}（或重启服务让它"
                        "重新写入），或者手工停止服务，然后再运行"),
    "fix_pid_file": ("the service runs but writes no pid file {pid_file}, which this playbook needs to find its "
                     "process: set CATALINA_PID in bin/setenv.sh (CATALINA_PID=\"$CATALINA_BASE/{pid_file}\") and "
                     "restart it, or use a playbook that finds the process by its command line (process:, as the "
                     "shipped tomcat playbook does)",
                     "服务在运行，但没有写进程号文件 {pid_file}，而本剧本要靠它找到服务进程：请在 bin/setenv.sh 中"
                     "设置 CATALINA_PID（CATALINA_PID=\"$CATALINA_BASE/{pid_file}\"）并重启服务，或改用按命令行查找进程"
                     "的剧本（process:，如随附的 tomcat 剧本）"),
    "fix_down": ("the service does not run now (no process, nothing answers): start it and check it is healthy, then "
                 "try again", "服务当前没有运行（没有进程，也没有任何响应）：请先启动服务并确认正常，然后再试"),
    "fix_explicit": ("the service's configuration {file} says {name} = {value}, but {used} was given (inventory "
                     "vars or --var): give the value the service really uses",
                     "服务的配置文件 {file} 中 {name} = {value}，但指定的是 {used}（清单或 --var）：请改为服务实际使用的值"),
    "fix_config": ("{file} says {name} = {value}, but nothing answers there: the service may run with another "
                   "configuration (changed since it was started?): check {file}, or give the real value with "
                   "--var {name}=VALUE",
                   "{file} 中 {name} = {value}，但该处没有响应：服务可能使用的是另一份配置（启动后配置被改过？）："
                   "请检查 {file}，或用 --var {name}=实际值 指定"),
    "fix_default": ("{name} = {used} is the playbook's default ({file}: {error}): give the real value with "
                    "--var {name}=VALUE or in the inventory's vars",
                    "{name} = {used} 是剧本的默认值（{file}：{error}）：请用 --var {name}=实际值 或在清单的 vars 中指定"),
    "fix_port": ("the port comes from the playbook's default or the inventory: give the port the service listens on "
                 "with --var NAME=PORT or in the inventory's vars",
                 "端口来自剧本默认值或清单：请用 --var 名称=端口 或在清单的 vars 中指定服务实际监听的端口"),
    "fix_http": ("{url} answers, but not as the playbook expects from the running version: check the probe's "
                 "status, body or contains in the playbook",
                 "{url} 有响应，但与剧本对当前版本的预期不符：请检查剧本中该检查的 status、body 或 contains"),
    "fix_no_answer": ("{url} does not answer: check the probe's URL in the playbook, and that what it checks runs",
                      "{url} 没有响应：请检查剧本中该检查的地址，以及它所检查的服务是否在运行"),
    "fix_log": ("the log file {file} is not a path inside the install dir: correct the playbook",
                "日志文件 {file} 不在安装目录之内：请修改剧本"),
    "fix_other": ("check this probe in the playbook", "请检查剧本中的这项检查"),
    # the host lock, checked before any question
    "locked": ("[bold red]This install is locked by run {run}[/bold red] ({user}@{controller}, since {since}): an "
               "earlier upgrade did not end normally, or another one is running now. Nothing was asked and "
               "nothing was changed; your approval was not used.",
               "[bold red]这个安装已被运行 {run} 锁定[/bold red]（{user}@{controller}，自 {since} 起）：上一次升级"
               "没有正常结束，或者另一次升级正在进行。本次没有提问，也没有做任何改动；您的审批文件没有被使用。"),
    "locked_way_out": ("What to do: 1. see what this host needs: {status}  2. only when that run is no longer going "
                       "on (its terminal is closed, the machine was restarted): finish it from its journal with "
                       "{resume}, or put the old version back with {rollback}  3. then start the guide again.",
                       "处理办法：1. 查看本机状态：{status}  2. 只有在确认该运行已经不在进行（其终端已关闭或机器已重启）时："
                       "用 {resume} 按运行日志完成它，或用 {rollback} 退回旧版本  3. 然后重新运行本向导。"),
    "locked_error": ("the install is locked by run {run} ({user}@{controller})",
                     "该安装已被运行 {run} 锁定（{user}@{controller}）"),
    "locked_error_hint": ("{status}; then {resume} or {rollback}", "{status}；然后 {resume} 或 {rollback}"),
    # step 5
    "backup_note": ("upgrader makes a verified backup of every product file the upgrade changes and restores it "
                    "if anything fails. It does NOT back up your business data: databases, files your "
                    "applications write elsewhere, and anything outside {dir}. Backing those up is your "
                    "responsibility.",
                    "upgrader 会对升级要改动的每个产品文件做经过校验的备份，出错时自动恢复。"
                    "但它[bold]不会[/bold]备份您的业务数据：数据库、应用写在其他位置的文件，以及 {dir} 之外的任何内容。"
                    "这些数据的备份由您负责。"),
    "ask_backup": ("Have you backed up your business data?", "您已经备份好业务数据了吗？"),
    "backup_no": ("Please back up your business data first, then run the guide again. Nothing was changed.",
                  "请先备份业务数据，然后重新运行向导。未做任何改动。"),
    # step 6
    "ask_access": ("Do you want to let your engineer log in to this host for a few hours to help?",
                   "需要让工程师在几个小时内远程登录本机协助吗？"),
    "ask_key": ("The engineer's public key file (e.g. engineer.pub)", "工程师的公钥文件（例如 engineer.pub）"),
    "ask_hours": ("For how many hours", "开放几个小时"),
    "ask_from": ("Only from these addresses (e.g. 10.1.2.3 or 10.1.2.0/24; type 'any' to allow any address)",
                 "只允许来自这些地址（例如 10.1.2.3 或 10.1.2.0/24；如不限来源，请输入“任何地址”）"),
    "access_granted": ("Access [green]granted[/green]: grant {id} for {user}, key {fp}, until {expires}, "
                       "from {where}. It ends by itself; you will be asked at the end whether to close it now.",
                       "已[green]授权[/green]：授权编号 {id}，账号 {user}，密钥 {fp}，有效期至 {expires}，"
                       "来源 {where}。到期自动失效；结束时会询问您是否立即关闭。"),
    "access_any": ("any address (the operator's explicit choice)", "任何地址（操作员明确选择）"),
    "access_failed": ("Access was not granted: {error}", "未能授权：{error}"),
    "ask_revoke": ("Close the engineer's access (grant {id}) now?", "现在关闭工程师的访问授权（编号 {id}）吗？"),
    "access_revoked": ("Access closed: grant {id} removed from {file}.", "已关闭访问：授权 {id} 已从 {file} 删除。"),
    "access_kept": ("Grant {id} stays open until {expires}. Close it any time with: {command}",
                    "授权 {id} 保持开放，直到 {expires}。随时可以关闭：{command}"),
    # step 6: each answer checked as it is given
    "key_empty": ("No key given: no access is granted.", "没有输入公钥：不授权访问。"),
    "access_none": ("No answer: no access is granted.", "没有得到回答：不授权访问。"),
    "key_private": ("{file} is a PRIVATE key, not a public key. A private key must never be handed out; ask the "
                    "engineer for the public key (the .pub file) and type its path.",
                    "{file} 是私钥，不是公钥。私钥绝不能交给别人；请向工程师索取公钥（.pub 文件），并输入它的路径。"),
    "key_bad": ("{file} is not an engineer's public key ({error}). Type the path of the .pub file the engineer sent.",
                "{file} 不是工程师的公钥（{error}）。请输入工程师发来的 .pub 公钥文件的路径。"),
    "key_unreadable": ("Cannot read {file} ({error}). Check the path and type it again.",
                       "无法读取 {file}（{error}）。请检查路径后重新输入。"),
    "key_ok": ("Public key {fp} ({kind}).", "公钥 {fp}（{kind}）。"),
    "hours_bad": ("{value} is not a number of hours above 0 and at most {max} (the policy's limit). Type it again.",
                  "{value} 不是有效的小时数：必须大于 0，且不超过策略规定的 {max} 小时。请重新输入。"),
    "from_required": ("A source address is required: type the engineer's address, or 'any' to allow any address.",
                      "必须填写来源地址：请输入工程师的地址；如确实不限来源，请输入“任何地址”。"),
    "from_bad": ("{value} is not an address, a network (CIDR) or an OpenSSH address pattern. Type it again.",
                 "{value} 不是地址、网段（CIDR）或 OpenSSH 地址模式。请重新输入。"),
    "stop_no_grant": ("You chose not to upgrade now. The service was not stopped and the upgrade did not start, but "
                      "the engineer's access (grant {id}) is still open: you are asked next whether to close it.",
                      "您选择现在不升级。服务没有被停止，升级也没有开始；但工程师的访问授权（编号 {id}）仍然有效，"
                      "下面会询问是否关闭。"),
    "interrupted_with_grant": ("[bold]Cancelled.[/bold] The service was not stopped and the upgrade did not start, "
                               "but the engineer's access (grant {id}) is still open: it is closed next.",
                               "[bold]已取消。[/bold]服务没有被停止，升级也没有开始；但工程师的访问授权（编号 {id}）"
                               "仍然有效，下面将关闭它。"),
    # the operator's audit key, set up on first use
    "audit_key_none": ("upgrader signs the end of each run in the audit log with your own SSH key (the operator's "
                       "audit key). None was found, so one is made now.",
                       "upgrader 会用您自己的 SSH 密钥（操作员审计密钥）签署审计日志中每次运行的结束记录。"
                       "目前没有找到这个密钥，现在为您生成一个。"),
    "ask_audit_key": ("Where should the new key be kept", "新密钥保存在哪里"),
    "audit_key_made": ("Audit key made: {key} (public key {pub}, {fp}). Send {pub} to your engineer so the policy's "
                       "audit.allowed_signers can name you.",
                       "已生成审计密钥：{key}（公钥 {pub}，{fp}）。请把 {pub} 发给您的工程师，以便在策略的 "
                       "audit.allowed_signers 中登记您。"),
    "audit_key_add_line": ("{file} is a trust root, so the guide never changes it. Its owner adds this line to it; "
                           "until then the guide stops here (exit 4): {line}",
                           "{file} 是信任根，向导从不修改它。请由该文件的负责人把下面这一行加入该文件；"
                           "在此之前向导到此为止（退出码 4）：{line}"),
    "audit_key_failed": ("Cannot make the key there: {error}. Type another place.", "无法在该位置生成密钥：{error}。请换一个位置。"),
    "audit_key_found": ("Audit key: {key} ({fp}).", "审计密钥：{key}（{fp}）。"),
    # step 7
    "plan_line": ("{host}: {current} → {target} ({kind}); phases:", "{host}：{current} → {target}（{kind}）；步骤："),
    "phase_line": ("  {n}. {name}: {does}", "  {n}. {name}：{does}"),
    "downtime_note": ("The service is down from 'stop' until the new version is healthy. If anything fails, the "
                      "old version is restored and started again automatically.",
                      "从“停止服务”到新版本健康运行之间服务不可用。任何一步失败，都会自动恢复并重新启动旧版本。"),
    "ask_stop": ("Stop {product} now and upgrade it to {target}?", "现在停止 {product} 并升级到 {target} 吗？"),
    "stop_no": ("You chose not to upgrade now. Nothing was changed.", "您选择现在不升级。未做任何改动。"),
    # step 8
    "run_started": ("Run {run}: journal {journal}. If this window closes, the upgrade still goes on to a safe end; "
                    "check it later with: {command}",
                    "运行编号 {run}：日志 {journal}。即使此窗口关闭，升级也会继续进行到安全的结束点；"
                    "之后可以用 {command} 查看和完成。"),
    "phase_started": ("  … {name}", "  … {name}"),
    "phase_ok": ("  [green]✔[/green] {name} ({seconds:.1f}s) {detail}", "  [green]✔[/green] {name}（{seconds:.1f} 秒）{detail}"),
    "phase_failed": ("  [red]✘[/red] {name} ({seconds:.1f}s) {detail}", "  [red]✘[/red] {name}（{seconds:.1f} 秒）{detail}"),
    "rolling_back": ("  [bold yellow]⟲ rolling back to the old version[/bold yellow]: {cause}",
                     "  [bold yellow]⟲ 正在回滚到旧版本[/bold yellow]：{cause}"),
    "cancel_first": ("[bold yellow]Ctrl-C: cancelling at the next safe point.[/bold yellow] If the service was "
                     "not stopped yet, nothing is changed; if it was, the old version is restored and started. "
                     "Please wait.",
                     "[bold yellow]Ctrl-C：将在下一个安全点取消。[/bold yellow]如果服务还没有停止，不会改动任何东西；"
                     "如果已经停止，会恢复并启动旧版本。请稍候。"),
    "cancel_again": ("[bold yellow]Please wait: the run is being cancelled and, if needed, rolled back to the old "
                     "version. Interrupting a rollback would leave the service down, so it goes on.[/bold yellow]",
                     "[bold yellow]请稍候：正在取消，必要时正在回滚到旧版本。中断回滚会导致服务不可用，"
                     "所以回滚会继续完成。[/bold yellow]"),
    # result
    "done_ok": ("[bold green]Upgrade done[/bold green]: {product} now runs {version} and is healthy (downtime {downtime}).",
                "[bold green]升级完成[/bold green]：{product} 现在运行 {version}，运行正常（停机 {downtime}）。"),
    "done_ok_next": ("Next: check your applications as usual. The backup of the old version is kept on this host; "
                     "to go back (it asks before it stops the service): {command}",
                     "下一步：请按平时的方式检查您的应用。旧版本的备份保存在本机；如需退回（停止服务前会先征求您的同意）："
                     "{command}"),
    "done_after_cancel": ("Ctrl-C came too late: the upgrade had already finished.", "Ctrl-C 太晚：升级已经完成。"),
    "cancelled_nothing": ("[bold]Cancelled.[/bold] The service was never stopped and nothing on this host was "
                          "changed{lock}.",
                          "[bold]已取消。[/bold]服务没有被停止，本机没有任何改动{lock}。"),
    "lock_released": (" (the lock was released and the staged files removed)", "（已释放主机锁并清除了暂存文件）"),
    "cancelled_rolled_back": ("[bold yellow]Cancelled and rolled back.[/bold yellow] The service had been stopped; "
                              "the old version {version} was restored and is running and healthy.",
                              "[bold yellow]已取消并回滚。[/bold yellow]服务已经被停止过；旧版本 {version} "
                              "已恢复，正在正常运行。"),
    "failed_rolled_back": ("[bold yellow]The upgrade failed and was rolled back.[/bold yellow] Why: {cause}. "
                           "The old version {version} was restored and is running and healthy.",
                           "[bold yellow]升级失败，已回滚。[/bold yellow]原因：{cause}。旧版本 {version} "
                           "已恢复，正在正常运行。"),
    "failed_unchanged": ("[bold yellow]The upgrade did not start:[/bold yellow] {cause}. The service was not "
                         "stopped; nothing was changed.",
                         "[bold yellow]升级没有开始：[/bold yellow]{cause}。服务没有被停止，未做任何改动。"),
    "needs_person": ("[bold red]This host needs a person now.[/bold red] {cause}. Call your engineer at once.",
                     "[bold red]本机需要人工处理。[/bold red]{cause}。请立即联系您的工程师。"),
    "stale_plan": ("[bold red]Not run:[/bold red] {cause}.", "[bold red]未执行：[/bold red]{cause}。"),
    "send_support": ("Send to support: the run journal {journal}{diag} and the run id {run}. The audit log "
                     "{audit} records every step.",
                     "请发给技术支持：运行日志目录 {journal}{diag}，以及运行编号 {run}。审计日志 {audit} 记录了每一步。"),
    "diagnostics": (", the diagnostics bundle {bundle}", "、诊断包 {bundle}"),
    "contact": ("Whom to contact: your engineer ({approver}) or the vendor's support line.",
                "联系人：您的工程师（{approver}）或厂商技术支持。"),
    "checkpoint": ("Audit checkpoint: line {line}, seq {seq}, head {head}.", "审计检查点：第 {line} 行，序号 {seq}，哈希 {head}。"),
    "interrupted_before": ("[bold]Cancelled.[/bold] Nothing on this host was changed.",
                           "[bold]已取消。[/bold]本机没有任何改动。"),
    "terminal_lost": ("the terminal was lost", "终端连接已断开"),
    "yes_mode": ("--yes: answering the questions with their scripted answers (see --help).",
                 "--yes：按脚本模式自动回答问题（见 --help）。"),
    "answer_auto": ("{question} → {answer} (--yes)", "{question} → {answer}（--yes）"),
    "yes_word": ("yes", "是"),
    "no_word": ("no", "否"),
    "yn_default_no": ("[y/N]", "[y/N]（默认：否）"),
    "yn_default_yes": ("[Y/n]", "[Y/n]（默认：是）"),
    "yn_invalid": ("Please answer y or n.", "请输入 y 或 n。"),
    # errors the guide raises itself (no markup: the English text is also the error's message in logs)
    "error_shown": ("[bold red]Error:[/bold red] {text}", "[bold red]错误：[/bold red]{text}"),
    "error_hint": ("  → {hint}", "  → {hint}"),
    "plan_not_local": ("the plan is not for this host alone (the guide runs a plan of one host whose address "
                       "is 'local')",
                       "这份计划不是只针对本机的（向导只执行只有一台主机、且地址为 local 的计划）"),
    "plan_not_local_hint": ("use upgrader run for a fleet plan", "多台主机的计划请用 upgrader run 执行"),
    "plan_other_package": ("the plan installs another package (sha256 differs)",
                           "这份计划安装的是另一个升级包（sha256 不同）"),
    "plan_other_package_hint": ("give the package the plan {plan} was made for, or leave out --package",
                                "请给出计划 {plan} 所对应的升级包，或去掉 --package"),
    "plan_other_dir": ("the plan is for {planned}, not {dir}", "这份计划针对的是 {planned}，不是 {dir}"),
    "plan_other_dir_hint": ("leave out --install-dir, or make a new plan for that directory",
                            "请去掉 --install-dir，或为该目录重新生成计划"),
    "not_install_hint": ("give the product's install directory with --install-dir (and --playbook P for a product "
                         "upgrader does not ship a playbook for)",
                         "请用 --install-dir 指定产品的安装目录（upgrader 没有自带剧本的产品，还要用 --playbook P "
                         "指定剧本）"),
    "yes_needs_dir_hint": ("upgrader guide --install-dir DIR ...", "upgrader guide --install-dir 安装目录 ..."),
    "inventory_not_one": ("the guide needs exactly one host with address 'local' here, found {n}",
                          "向导需要清单中正好有一台地址为 local 的主机，实际找到 {n} 台"),
    "inventory_not_one_hint": ("give --install-dir to choose one", "请用 --install-dir 选择其中一台"),
    "package_other_version": ("the package holds {version}, not {target}", "升级包中的版本是 {version}，不是 {target}"),
    "package_other_version_hint": ("leave out --to, or give the package of that version",
                                   "请去掉 --to，或给出该版本的升级包"),
    "package_not_in_catalog": ("the package is not the one the signed catalog {catalog} lists for {product} "
                               "{version} (sha256 differs or no entry)",
                               "该升级包不是已签名目录 {catalog} 中为 {product} {version} 登记的升级包"
                               "（sha256 不同或没有该条目）"),
    "package_not_in_catalog_hint": ("use the package from the vendor's signed catalog",
                                    "请使用厂商已签名目录中的升级包"),
    "plan_write_failed": ("cannot write the plan: {error}", "无法写入计划：{error}"),
    "bad_var": ("--var {pair}: expected NAME=VALUE, e.g. --var http_port=8088",
                "--var {pair}：格式应为 名称=值，例如 --var http_port=8088"),
    "bad_var_hint": ("NAME is a playbook variable: letters, digits and _, not starting with a digit",
                     "名称是剧本变量名：由字母、数字和 _ 组成，不能以数字开头"),
    "access_closed_lost": ("The terminal was lost: grant {id} was closed.", "终端连接已断开：授权 {id} 已关闭。"),
    "missing_target": ("tell the guide what to upgrade to", "请告诉向导要升级到哪个版本"),
    "missing_target_hint": ("give --package PKG (from a signed catalog directory), or --catalog CAT --to VERSION, "
                            "or the --plan and --approval your engineer sent",
                            "请给出 --package PKG（位于已签名的目录中），或 --catalog CAT --to VERSION，"
                            "或工程师发来的 --plan 和 --approval"),
}

# version policy rules and plan checks: (English name, Chinese name, English meaning, Chinese meaning)
RULES: dict[str, tuple[str, str, str, str]] = {
    "same_product": ("same product", "同一产品",
                     "the package is for the product installed here", "升级包必须是本机所安装的产品"),
    "newer": ("newer version", "更新的版本",
              "the target must be strictly newer (no downgrade, no same version)",
              "目标版本必须更新（不允许降级，也不允许“升级”到相同版本）"),
    "same_line": ("same product line", "同一产品线",
                  "a letter series (7.0.C.x) is a separate line; moving between lines is not a free upgrade",
                  "字母系列（如 7.0.C.x）是独立的产品线，跨产品线不属于免费升级"),
    "free_levels": ("maintenance levels only", "只变化维护级别",
                    "only levels 3 and 4 (and the build tag) may change; a major or minor change needs a "
                    "separate agreement",
                    "只有第 3、4 级版本号（以及构建标记）可以变化；主版本或次版本的变化需要另行商定"),
    "declared_changes": ("no interface changes", "不改变接口",
                         "the package must not change external interfaces, the configuration file format or "
                         "monitoring/management",
                         "升级包不得改变对外接口、配置文件格式或监控/管理功能"),
    "maintenance_contract": ("maintenance contract", "维保合同",
                             "this host's maintenance contract must cover today",
                             "本机的维保合同必须覆盖今天"),
    "patch_requires": ("patch fits", "补丁适用",
                       "a patch must apply to the version installed now", "补丁必须适用于当前安装的版本"),
    "approval": ("engineer approval", "工程师审批",
                 "an engineer must approve this exact plan (checked next)", "工程师必须审批这份计划（下一步检查）"),
    "installed_version": ("installed version", "已安装版本",
                          "the installed version must be readable", "必须能读出已安装的版本"),
    "package": ("package", "升级包", "the signed catalog must hold the package", "已签名的目录中必须有该升级包"),
    "manual_changes": ("hand-made changes", "手工改动",
                       "product files changed by hand since the last install would be overwritten",
                       "上次安装后被手工改过的产品文件会被覆盖"),
    "lock": ("host lock", "主机锁", "no other run may be working on this install", "不能有其他运行正在处理这个安装"),
    "health_checks": ("health checks proven", "健康检查已验证", "every health probe passes on the running version "
                      "before anything is stopped", "停止服务之前，每项健康检查都要在当前运行的版本上通过"),
    "free_disk": ("free disk", "磁盘空间", "enough free disk for the package and its staging",
                  "磁盘空间要足够放下升级包和暂存文件"),
    "host_trust_root": ("host trust root", "主机信任根",
                        "the host's own list of engineers and vendors it accepts (/etc/upgrader/host-trust)",
                        "主机自己认可的工程师和厂商名单（/etc/upgrader/host-trust）"),
    "non_ascii_names": ("non-ASCII names", "非 ASCII 名称",
                        "application folders with non-ASCII names break some vendors' patch tools",
                        "应用目录使用非 ASCII（如中文）名称会导致某些厂商的补丁工具出错"),
}

PHASES: dict[str, tuple[str, str]] = {
    "preflight": ("preflight", "预检"), "backup": ("backup", "备份"), "stop": ("stop the service", "停止服务"),
    "install": ("install", "安装"), "start": ("start", "启动"), "observe": ("health observation", "健康观察"),
    "rollback": ("restore the old version", "恢复旧版本"),
}
_PHASE_DOES: dict[str, tuple[str, str]] = {
    "preflight": ("lock the install, check the package and the free disk; nothing is changed",
                  "锁定安装，检查升级包和磁盘空间；不做任何改动"),
    "backup": ("stage the new version and make a verified backup while the service still runs",
               "在服务仍运行时暂存新版本并做经过校验的备份"),
    "stop": ("stop the service (the downtime starts)", "停止服务（开始停机）"),
    "install": ("put the new version in place, keeping your configuration and data", "放入新版本，保留您的配置和数据"),
    "start": ("start the new version", "启动新版本"),
    "observe": ("check that it stays healthy for a while", "检查新版本在一段时间内持续正常"),
}


class Markup(str):
    """Text that already is rich markup (a rendered message, a coloured mark): filled in as it is."""


class Messages:
    """``t.plain("key", field=value)``: the text of a key in the chosen language."""

    def __init__(self, lang: str, table: dict[str, tuple[str, str]] | None = None) -> None:
        self.lang = lang
        self._i = 1 if lang == "zh" else 0
        self._table = MESSAGES if table is None else table

    def plain(self, msg: str, **fields: object) -> str:
        """The text with its fields as they are, for a text that holds no markup (an error's message)."""
        return self._table[msg][self._i].format(**fields)

    def rule(self, rule: str) -> tuple[str, str]:
        """(name, meaning) of a policy rule or plan check, in this language."""
        entry = RULES.get(rule)
        if entry is None:
            return rule, ""
        return (entry[1], entry[3]) if self._i else (entry[0], entry[2])

    def phase(self, phase: str) -> str:
        if phase.startswith("hook:"):
            return ("钩子 " if self._i else "hook ") + phase[5:]
        return PHASES.get(phase, (phase, phase))[self._i]

    def does(self, phase: str) -> str:
        return _PHASE_DOES.get(phase, ("", ""))[self._i]

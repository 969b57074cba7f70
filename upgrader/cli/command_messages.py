"""The words of the commands a customer's operator meets besides the guide (``access grant|list|revoke``,
``inspect``, ``available``, ``diagnostics``, ``status``, the question ``rollback`` asks), in English and Simplified Chinese, in one catalog.

Same form and rules as ``guide_messages`` (key -> (English, Chinese), rich markup in the texts, every
field escaped); ``texts(lang)`` gives the ``Messages`` for this catalog. The ``upgrader: error:`` line
for logs stays English. This module does no I/O.
"""

from __future__ import annotations

from .guide_messages import Messages

__all__ = ["COMMAND_MESSAGES", "texts"]

COMMAND_MESSAGES: dict[str, tuple[str, str]] = {
    # access grant
    "grant_failed": ("[bold red]{host}failed[/bold red] {error}", "[bold red]{host}失败[/bold red] {error}"),
    "granted": ("{host}[bold green]granted[/bold green] grant [bold]{id}[/bold]: [bold]{user}[/bold] until {expires} "
                "({hours}h)", "{host}[bold green]已授权[/bold green] 授权编号 [bold]{id}[/bold]：账号 [bold]{user}[/bold]，"
                "有效期至 {expires}（{hours} 小时）"),
    "extended": ("{host}[bold green]extended[/bold green] grant [bold]{id}[/bold]: [bold]{user}[/bold] until {expires} "
                 "({hours}h)", "{host}[bold green]已延长[/bold green] 授权编号 [bold]{id}[/bold]：账号 [bold]{user}[/bold]，"
                 "有效期至 {expires}（{hours} 小时）"),
    "grant_key": ("  key     {fp} ({kind})", "  公钥    {fp}（{kind}）"),
    "grant_from": ("  from    {where}", "  来源    {where}"),
    "grant_reason": ("  reason  {reason}", "  事由    {reason}"),
    "grant_file": ("  file    {file}", "  文件    {file}"),
    "grant_file_created": ("  file    {file} (created)", "  文件    {file}（新建）"),
    "grant_allows": ("  allows  commands and SFTP only (restrict: no pty, no forwarding)",
                     "  允许    只能执行命令和 SFTP（restrict：没有终端，不能转发）"),
    "grant_ends_one": ("it ends by itself at its expiry; to end it early: {command}",
                       "到期自动失效；如需提前结束：{command}"),
    "grant_ends_many": ("it ends by itself at its expiry; to end it early: {command} (ids: {ids})",
                        "到期自动失效；如需提前结束：{command}（编号：{ids}）"),
    "any_address": ("any address", "任何地址"),
    # access list
    "list_none": ("{host}no grants in {file}", "{host}{file} 中没有授权"),
    "list_none_no_file": ("{host}no grants in {file} (the file does not exist)", "{host}{file} 中没有授权（文件不存在）"),
    "list_head": ("{host}{n} grant(s) for [bold]{user}[/bold] in {file}", "{host}{file} 中账号 [bold]{user}[/bold] 有 {n} 条授权"),
    "list_line": ("  [bold]{id}[/bold]  {fp} ({kind})  until {expires} ({left})",
                  "  [bold]{id}[/bold]  {fp}（{kind}）  有效期至 {expires}（{left}）"),
    "list_by": ("      granted by {by}, from {where}, reason: {reason}", "      授权人 {by}，来源 {where}，事由：{reason}"),
    "left_permanent": ("[bold red]no expiry-time: permanent[/bold red]", "[bold red]没有到期时间：永久有效[/bold red]"),
    "left_expired": ("[red]EXPIRED[/red]", "[red]已过期[/red]"),
    "left": ("{days}{hours}h {minutes}m left", "还剩 {days}{hours} 小时 {minutes} 分"),
    "left_days": ("{n}d ", "{n} 天 "),
    "never": ("NONE", "无"),
    "added_line": ("[bold red]{file} line {line}[/bold red] lets the key {fp} in, added while grant {id} was open "
                   "(key {engineer}): remove it unless you added it yourself",
                   "[bold red]{file} 第 {line} 行[/bold red]允许密钥 {fp} 登录，是在授权 {id}（公钥 {engineer}）有效期间"
                   "加入的：除非是您自己加入的，否则请删除它"),
    # access revoke
    "revoke_nothing_expired": ("{host}no expired grant in {file}: nothing to revoke", "{host}{file} 中没有已过期的授权：无需撤销"),
    "revoke_nothing_all": ("{host}no grant in {file}: nothing to revoke", "{host}{file} 中没有授权：无需撤销"),
    "revoke_nothing_id": ("{host}no grant {id} in {file}: nothing to revoke", "{host}{file} 中没有授权 {id}：无需撤销"),
    "record_restored": ("{host}the record of grant {id} was gone: written back from the audit log "
                        "(HOME/access/grants/{id}.json)",
                        "{host}授权 {id} 的记录已不存在：已从审计日志写回（HOME/access/grants/{id}.json）"),
    "revoked": ("{host}[bold]revoked[/bold] grant {id} (key {fp}, granted by {by}, {state}) from {file}",
                "{host}[bold]已撤销[/bold] 授权 {id}（公钥 {fp}，授权人 {by}，{state}），文件 {file}"),
    "state_expired": ("expired", "已过期"),
    "state_valid": ("was still valid", "撤销前仍有效"),
    # inspect (the table)
    "inspect_title": ("Health inspection ({time})", "健康巡检（{time}）"),
    "col_host": ("host", "主机"), "col_os": ("os / kernel", "操作系统 / 内核"), "col_version": ("version", "版本"),
    "col_process": ("process", "进程"), "col_ports": ("ports", "端口"), "col_disk": ("disk", "磁盘"),
    "col_memory": ("memory free", "可用内存"), "col_load": ("load/cpu", "每 CPU 负载"),
    "col_open_files": ("open files", "打开文件数"), "col_log_errors": ("log errors", "日志错误"),
    "col_warnings": ("warnings", "告警"),
    "cannot_inspect": ("cannot inspect: {error}", "无法巡检：{error}"),
    "running_pid": ("running (pid {pid})", "运行中（pid {pid}）"),
    "not_running": ("not running", "未运行"),
    "disk_use": ("{pct}% of {total}", "已用 {pct}%，共 {total}"),
    "finding": ("{host}: [yellow]warning[/yellow] [bold]{check}[/bold]: {message}",
                "{host}：[yellow]告警[/yellow] [bold]{check}[/bold]：{message}"),
    "inspect_summary": ("{inspected} of {hosts} host(s) inspected, {warnings} warning(s)",
                        "共 {hosts} 台主机，已巡检 {inspected} 台，告警 {warnings} 条"),
    "inspect_unreachable": ("; [bold red]not inspected: {hosts}[/bold red]", "；[bold red]未能巡检：{hosts}[/bold red]"),
    "report_written": ("report written to [bold]{file}[/bold]", "报告已写入 [bold]{file}[/bold]"),
    "inspect_bundle_written": ("bundle written to [bold]{file}[/bold]: send this one file to support",
                       "巡检包已写入 [bold]{file}[/bold]：请将此文件发送给技术支持"),
    "changed": ("{host}: [cyan]changed[/cyan] since {time}: {message}", "{host}：自 {time} 以来[cyan]已变化[/cyan]：{message}"),
    "advice": ("{host}:   advice: {setting} (in {file}): {reason}", "{host}：  建议：{setting}（文件：{file}）：{reason}"),
    "no_previous": ("{host}: first inspection kept (the next one will show what changed)",
                    "{host}：首次巡检已保存（下次巡检将显示变化）"),
    # available
    "available_title": ("Available upgrades (catalog serial {serial}, signed by {signer})",
                        "可用的升级（目录序号 {serial}，签名者 {signer}）"),
    "col_current": ("current", "当前版本"), "col_newest": ("newest free upgrade", "最新的免费升级"),
    "col_also": ("also allowed", "其他允许的版本"), "col_refused": ("not allowed", "不允许的版本"),
    "col_advisories": ("advisories", "安全公告"),
    "cannot_read_host": ("cannot read the host: {error}", "无法读取主机：{error}"),
    "no_advisories": ("none", "无"),
    "refused_line": ("[bold]{host}[/bold]: [bold red]{version}[/bold red] ({kind}) is not a free upgrade: {reasons}",
                     "[bold]{host}[/bold]：[bold red]{version}[/bold red]（{kind}）不属于免费升级：{reasons}"),
    "advisory_line": ("[bold]{host}[/bold]: [bold]{id}[/bold] [{severity}] {title}: {status} ({why}); {fix}",
                      "[bold]{host}[/bold]：[bold]{id}[/bold] [{severity}] {title}：{status}（{why}）；{fix}"),
    "advisory_hosts": ("[bold red]{n} host(s) run a version named in an advisory:[/bold red] {hosts}",
                       "[bold red]{n} 台主机运行的版本在安全公告中：[/bold red]{hosts}"),
    "status_affected": ("affected", "受影响"), "status_cannot tell": ("cannot tell", "无法判断"),
    # diagnostics
    "bundle_written": ("diagnostics bundle: [bold]{bundle}[/bold] (secrets redacted{obfuscated}): send it to support",
                       "诊断包：[bold]{bundle}[/bold]（已隐去密码等敏感信息{obfuscated}），请发送给技术支持。"),
    "bundle_obfuscated": (", host names and addresses obfuscated", "，主机名和地址已替换为代号"),
    "bundle_key": ("the key to the obfuscated names stays here: {file}", "代号与真实名称的对照表留在本机：{file}"),
    "bundle_failed": ("[yellow]the diagnostics bundle could not be written: {error}[/yellow]",
                      "[yellow]无法写入诊断包：{error}[/yellow]"),
    # status
    "status_runs": ("[bold]{host}[/bold]  runs {version}", "[bold]{host}[/bold]  运行版本 {version}"),
    "status_version_unread": ("  version not read: {why}", "  未读取到版本：{why}"),
    "status_version_refused": ("  version not read: version source is a command; with a host trust root only file "
                               "sources are read outside an accepted run (the command was not run); the host says: {why}",
                               "  未读取版本：版本来源是一条命令；主机有自己的信任根时，在被接受的运行之外只读取文件来源"
                               "（该命令未运行）；主机的说明：{why}"),
    "status_unreachable": ("[bold]{host}[/bold]  UNREACHABLE: {error}", "[bold]{host}[/bold]  无法连接：{error}"),
    "status_lock_ours": ("  locked by run {run} ({user}@{controller} since {since}): a run of this machine: finish it "
                         "with {command}", "  被运行 {run} 锁定（{user}@{controller}，自 {since} 起）：这是本机的运行，"
                         "用 {command} 完成它"),
    "status_lock_foreign": ("  locked by run {run} ({user}@{controller} since {since}): not a run of this machine: ask "
                            "its owner; only if that run is dead, recover with --break-lock ({rollback}, {resume} or "
                            "{run_plan})", "  被运行 {run} 锁定（{user}@{controller}，自 {since} 起）：不是本机的运行，"
                            "请先询问其持有者；只有确认该运行已经结束时，才用 --break-lock 接管（{rollback}、{resume} 或 "
                            "{run_plan}）"),
    "status_interrupted": ("  run {run}: its {command} was interrupted at {phase}: {resolve}",
                           "  运行 {run}：{command} 在“{phase}”阶段被中断：用 {resolve} 完成它"),
    "status_needs_person": ("  run {run}: its {command} ended needing a person: {resolve} (after reading its journal: "
                            "{diagnostics})", "  运行 {run}：{command} 结束时需要人工处理：先查看运行日志（{diagnostics}），"
                            "再用 {resolve}"),
    "status_waiting": ("  run {run} waits for a confirmation after a healthy canary: {resolve}",
                       "  运行 {run} 在金丝雀主机健康后等待确认：{resolve}"),
    "status_ok": ("  no lock, nothing waits for a person", "  没有锁，没有需要人工处理的事"),
    # rollback's question before it stops a service
    "rollback_what": ("Rollback of run {run}: on {hosts} the service {product} is stopped, the backup of {version} "
                      "restored and started again. The service is down meanwhile.",
                      "回滚运行 {run}：将在 {hosts} 上停止服务 {product}，恢复 {version} 的备份并重新启动。期间服务不可用。"),
    "rollback_many_batches": ("roll back {n} hosts in batches of {batch}: each is stopped and restored in turn.",
                              "共回滚 {n} 台主机，每批 {batch} 台：逐批停止并恢复。"),
    "rollback_many_at_once": ("roll back {n} hosts at once: all are stopped together (give --batch N for rolling "
                              "batches).", "共回滚 {n} 台主机，同时停止（用 --batch N 可分批）。"),
    "rollback_ask": ("Stop the service and roll back now? [y/N] ", "现在停止服务并回滚吗？[y/N]（默认：否） "),
    "rollback_no": ("Not rolled back: nothing was changed.", "没有回滚：未做任何改动。"),
    "rollback_invalid": ("Please answer y or n.", "请输入 y 或 n。"),
}


def texts(lang: str) -> Messages:
    """The catalog's texts in ``lang`` (``en`` or ``zh``)."""
    return Messages(lang, COMMAND_MESSAGES)

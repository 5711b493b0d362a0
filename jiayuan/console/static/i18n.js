// Words of the console: Chinese by default, English by the switch (remembered).

const ZH = {
  title: "家园 · 值班台", brand: "家园", brand_sub: "值班台",
  nav_board: "报警", nav_devices: "设备", nav_residents: "老人", nav_ops: "运维",
  live: "实时", offline_conn: "连接中断，正在重连…", connecting: "正在连接…",
  sound_on: "提示音：开", sound_off: "提示音：关", sound_enable: "点击启用提示音",
  staff_none: "设置工号", staff_is: "工号 {id}", staff_prompt: "您的工号（如 sec-ctl-1、care-C03-01）",
  lang_switch: "EN", save: "保存", cancel: "取消", retry: "重试",
  sign_in: "登录", sign_in_title: "值班台登录", password: "密码", sign_out: "退出",
  wrong_credentials: "工号或密码错误", too_many: "失败次数过多，请 {s} 秒后再试",
  acting_as: "以 {id} 的身份操作", health_hidden: "健康数据仅对该老人的照护员显示",
  roles: { admin: "管理员", security: "保安", caretaker: "照护员", manager: "主管", operator: "运维", district_manager: "区域主管" },
  // the banner: what waits, counted as the board shows it (one card per incident)
  banner_wait: "{what}待确认", banner_in: "{i}（{n}）",
  n_incidents: "{n} 起事件", n_alarms: "{n} 条报警", n_alerts: "{n} 条告警",
  filter_status: "状态", filter_kind: "类型", filter_building: "楼栋", all: "全部",
  filter_community: "社区", community_n: "{c} 社区",
  outside_filters: "另有 {n} 条待确认的告警不在当前筛选内", show_all: "显示全部",
  status_open: "未解决", board_empty: "没有符合条件的告警", board_more: "还有 {n} 条未显示",
  // before the open alerts have arrived: never "no alerts"
  board_loading: "正在加载告警…", board_load_failed: "告警加载失败，正在重试…", board_refresh_failed: "告警未能刷新，正在重试…",
  ack: "确认", ack_short: "确认", resolve: "解决", details: "详情", acked_by: "{by} 已确认", resolved_by: "{by} 已解决",
  dlg_ack: "确认报警", dlg_resolve: "解决报警", note: "备注", note_ph: "说明情况（可选）",
  staff_id: "工号", submit_ack: "确认接警", submit_resolve: "标记为已解决",
  q_ack: ["正在前往", "已电话联系", "已通知家属"], q_resolve: ["误报", "已到场，人员安全", "已送医", "已更换电池"],
  refused: "操作被拒绝",
  where: "地点", device: "设备", resident: "老人", started: "开始于", raised: "上报于",
  last_match: "最近触发", matches: "触发次数", late_flag: "迟到数据", offline_flag: "设备离线",
  history: "处理记录", chart_around: "报警前后的读数", no_readings: "这段时间没有读数",
  events_around: "设备事件", compound: "院落", building: "楼栋", unit: "户",
  not_found: "未找到", loading: "加载中…", load_failed: "加载失败",
  devices_title: "设备状况", registered: "已登记", unregistered: "未登记设备",
  online: "在线", offline: "离线", no_status: "无状态", never_seen: "从未上线", silent: "失联",
  low_battery: "低电量", last_seen: "最后上报", battery: "电量", entrance: "{c} 大门",
  fw: "固件", first_seen: "首次上报", state_since: "状态自", open_alerts: "未解决告警",
  recent_events: "最近事件", none: "无", all_fine: "正常",
  only_trouble: "只看有问题的楼栋",
  residents_title: "我照护的老人", residents_all: "老人", caretaker_id: "照护员工号", caretakers: "照护员", show: "显示",
  primary: "主责", backup: "协助", vitals: "最新体征", today: "今日", steps: "步数",
  readings_today: "今日上报 {n} 次", worn: "佩戴", not_worn: "未佩戴", no_residents: "没有找到老人",
  no_wearable: "未登记手环", set_staff_first: "请先设置您的工号",
  ops_title: "运维", mqtt: "MQTT 连接", connected: "已连接", disconnected: "未连接",
  rate: "接收速率", per_s: "条/秒", lag: "入库延迟", queue: "待入库", commit_mean: "平均提交耗时",
  duplicates: "重复消息", ingest_errors: "处理错误", stream_clients: "实时连接数",
  received_total: "已接收消息", dead_letters: "死信（坏数据）",
  since_start: "自启动", all_time: "累计", latest_dead: "最近的死信", show_payload: "原始内容",
  sev: { critical: "危急", major: "严重", minor: "一般", warning: "提醒", info: "信息" },
  sig: { alarm: "报警", supervisory: "监视", trouble: "故障" },
  st: { firing: "待确认", acknowledged: "已确认", resolved: "已解决" },
  kinds: { wearable: "手环", smoke: "烟感", gate: "门禁", system: "系统", building: "楼栋" },
  act: {
    raised: "触发", rematched: "再次触发", acknowledged: "确认", resolved: "解决",
    auto_resolved: "自动恢复", offline: "设备离线", online: "设备上线", note: "备注",
    notified: "已通知", escalated: "已升级", muted: "已静默",
  },
  by_rule: "规则", by_system: "系统", alerts_st: "{st}告警",
  ev: {
    fall: "跌倒", sos: "SOS", removed: "摘下", worn: "戴上", low_battery: "电量低", alarm: "烟雾报警",
    alarm_clear: "报警解除", fault: "故障", fault_clear: "故障恢复", tamper: "拆动", test: "测试",
    fall_cancelled: "取消跌倒报警", granted: "通行", denied: "拒绝", forced: "强行打开", held_open: "未关门", closed: "已关门",
    online: "上线", offline: "离线", status: "状态",
  },
  metrics: {
    heart_rate: "心率", spo2: "血氧", skin_temp_c: "体表温度", battery: "电量", steps: "步数",
    obscuration_pct_m: "烟雾浓度", temperature_c: "温度", co_ppm: "一氧化碳",
  },
  reasons: {
    too_large: "超过 4 KiB", bad_utf8: "非 UTF-8", not_json: "非 JSON", not_object: "非 JSON 对象",
    unknown_topic: "未知主题", missing_field: "缺少字段", wrong_type: "类型错误",
    out_of_range: "超出范围", bad_value: "无效取值", unknown_community: "未知社区",
    too_deep: "嵌套过深", too_large_number: "数值过大", duplicate_key: "字段重复",
    lone_surrogate: "无效 Unicode 转义", journal_refused: "入库被拒",
  },
  rules: {
    wearable_fall: "跌倒报警", wearable_sos: "紧急呼叫（SOS）", wearable_heart_rate_high: "心率持续偏高",
    wearable_heart_rate_low: "心率持续偏低", wearable_spo2_low: "血氧持续偏低",
    wearable_removed: "手环已摘下", wearable_silent: "手环无信号",
    wearable_low_battery: "手环电量低", wearable_outside_area: "老人离开安全区域",
    wearable_heart_rate_above_baseline: "心率高于平时", wearable_heart_rate_high_at_rest: "静止时心率偏高",
    gate_opened_at_night: "夜间楼门被打开",
    smoke_alarm: "烟雾报警", smoke_co_high: "一氧化碳浓度高", smoke_fault: "烟感故障",
    smoke_tamper: "烟感被拆动", smoke_low_battery: "烟感电量低",
    smoke_battery_level_low: "烟感电池电量低", smoke_silent: "烟感无信号",
    gate_forced: "门禁被强行打开", gate_held_open: "门禁长时间未关", gate_denied_repeated: "门禁多次拒绝通行",
    gate_tamper: "门禁读卡器被拆动",
    fire_confirmed: "火警确认", building_trouble: "楼内多个设备同时故障",
    staff_unreachable: "值班人员无法联系", timeseries_store_unreachable: "时序数据库无法写入",
    nobody_reached: "报警无人接收",
  },
  kind_alert: "{k}告警",
  bldg: "{n}号楼", cmpd: "{n}号院", entrance_unit: "{e}单元{r}", floor_n: "{n}层", room: "房间",
  floor: "楼层", unit_label: "单元/户", devices_label: "相关设备", dev_floor: "{n}层",
  filters: "筛选", folded: "{n} 条{what}（{role}无需处理）", show_folded: "展开", hide_folded: "收起",
  fold_what: "低电量等设备提醒", incident_more: "同一事件还有 {n} 条：", incident: "事件",
  told: "通知情况", told_step: "已通知 {who}（第{step}步）", told_repeat: "再次提醒 {who}",
  told_update: "已告知 {who} 最新情况", told_nobody: "第{step}步：无人值班（{sel}）",
  delivered: "已送达", delivery_failed: "未送达", delivery_pending: "发送中", list_sep: "、", no_channel: "没有通知渠道", already_told: "{who} 已知晓（第{step}步）", fallback_desk: "已转保安台和值班主管",
  told_nobody_new: "第{step}步：没有新的人可通知，跳过", reached_nobody: "没有通知到任何人", false_alarm_line: "误报",
  incident_line: "归入同一事件", false_alarm: "误报（实际没有发生）", no_channel_short: "（无通知渠道）", not_told_step: "第{step}步：{who} 没有通知渠道，未能通知",
  acked_line: "{who} 已确认", nobody_acked: "尚无人确认", delivery_details: "发送详情",
  unreachable: "{who} 无法联系", escalated_line: "已升级到第{step}步",
  cancelled_line: "未发出的通知已取消", no_deliveries: "尚未发出通知",
  note_late: "由迟到的读数触发", note_wait: "等待 {s} 秒核实（可由佩戴者取消）后再通知",
  note_cleared: "规则已解除",
  note_cancelled: "佩戴者在 {after} 秒后取消（核实时限 {within} 秒内）：未通知任何人",
  note_cancelled_late: "佩戴者在 {after} 秒后取消，但已超出核实时限：通知已发出",
  note_preallarm: "未持续 {persist} 秒（{after} 秒后解除）：预报警，未通知任何人",
  name_label: "称呼", edit_label: "修改称呼", label_ph: "如：王奶奶", resident_id: "编号", choose_caretaker: "照护员", everyone: "全部老人",
  caretaker_refused: "无法按此照护员查看",
  nav_duty: "值班覆盖", duty_title: "值班覆盖", duty_intro: "新告警在一周中每个时段会先通知谁（按处理链和楼栋），以及哪些时段无人接收。",
  duty_all_week: "整周", duty_next_day: "次日", duty_entrance: "{c}大门", duty_nobody: "{route}：无人值班",
  duty_nobody_short: "无人", duty_residents: "{n} 位老人无人照看", duty_holes_title: "无人值班的时段（{n}）",
  duty_no_holes: "每个时段都有人值班。", duty_step: "第 {n} 步", duty_fallback: "仅保安台和值班主管",
  duty_place: "地点", duty_chain: "处理链", duty_first: "最先通知", duty_absent: "值班覆盖接口尚未启用（需要新版后台）。",
  duty_days: { Mon: "周一", Tue: "周二", Wed: "周三", Thu: "周四", Fri: "周五", Sat: "周六", Sun: "周日" },
  duty_routes: { security: "保安", caretaker: "照护", manager: "主管", operator: "运维" },
  nav_review: "周报", review_title: "每周回顾", week: "周", review_absent: "周报接口尚未启用（需要新版后台）。",
  csv: "下载 CSV", review_empty: "这一周没有数据", review_all: "全部告警", review_kind: "告警类型",
  review_raised: "次数", review_ack: "确认用时（中位/90%）", review_resolve: "解决用时（中位/90%）",
  review_unreached: "无人接收", review_times: "{n} 次", review_offline_for: "已离线",
  usual_at: "本人平时 {at} 前后的{m}：", usual_days: "（近 {days} 天中位数 ± 波动）", usual_how: "近 {days} 天中有 {n} 天在这个时段有数据",
  usual_unknown: "本人平时 {at} 前后的{m}：数据还不够（至少需要 {min} 天）", reading_then: "报警时",
  nav_rules: "规则", page_refused: "您的角色不能查看此页面", rules_title: "报警规则",
  nav_commission: "设备登记",
  commission: {
    title: "设备登记", intro: "这些设备在上报数据，但还没有登记位置。登记后，它们的报警按位置（手环按佩戴的老人）通知相应人员。",
    nothing_yet: "还没有数据", withheld: "健康数据不显示：{fields}", floor: "楼层", room: "房间", name: "名称（可选）",
    register: "登记", registered_to: "已登记到 {place}", password_once: "设备的 MQTT 密码（只显示这一次）：",
    accounts_not_managed: "服务不管理 MQTT 账号：请另行生成设备账号", messages: "{n} 条数据",
    streams: { telemetry: "数据", event: "事件", status: "状态" },
    import_title: "导入登记表", import_intro: "选择登记表：.xlsx（每类一个工作表：楼栋/设备/居民/员工，或 buildings/devices/residents/staff），或 .csv。先预览改动，确认后再应用。",
    preview: "预览改动", diff_of: "{file} 带来的改动：", no_changes: "与当前登记一致，没有改动", apply: "应用这些改动",
    applied: "已应用：{changes}", stale: "预览之后登记已被修改，请重新预览", empty: "（空）", removed: "删除", retired: "曾登记，已撤销",
    section_counts: "{section}：新增 {a}，删除 {r}，修改 {c}",
    sections: { buildings: "楼栋", devices: "设备", residents: "老人", staff: "员工" },
  },
  rules_intro: "每条规则在什么情况下报警、通知谁。修改数值后可以用过去的数据试算：每天会多报或少报几次。",
  rules_try: "试算", rules_try_title: "修改数值试算", rules_pick: "规则", rules_from: "从", rules_to: "到",
  rules_run: "开始试算", rules_running: "正在用过去的数据试算…（天数多时可能要几分钟）", rules_busy: "另一项试算正在进行，请稍后再试",
  rules_file: "或粘贴一份规则文件（YAML）", rules_file_run: "试算这份文件", rules_no_change: "请先修改至少一个数值",
  rules_range_bad: "日期范围最多 31 天，且结束不能早于开始",
  rules_result: "{from}至{to}（{n} 天）", rules_sentence: "改后共报警 {tried} 次，现行规则 {now} 次：{diff}。",
  rules_actual: "这段时间实际报警 {n} 次。", rules_more: "多 {n} 次", rules_fewer: "少 {n} 次", rules_same: "次数不变",
  rules_new_rule: "新规则共报警 {tried} 次（现行规则中没有这条）。", rules_gone: "现行规则 {now} 次，文件中没有这条规则。",
  rules_day: "日期", rules_col_now: "现行规则", rules_col_tried: "修改后", rules_col_diff: "差别", rules_col_actual: "实际报警", rules_short: { now: "现行", tried: "改后", diff: "差别", actual: "实际" },
  rules_replayed: "回放 {rows} 条数据，用时 {s} 秒", rules_unchanged: "其他规则未改动。", rules_per_day: "每天",
  rules_disabled: "已停用", rules_pages: "通知{who}", rules_change_this: "修改数值试算",
  rules_route: { security: "保安", caretaker: "老人的照护员", manager: "值班主管", operator: "运维人员" },
  rules_fields: {
    above: "高于", below: "低于", clear: "解除于", for: "持续（分钟）", threshold: "次数", window: "时间窗（分钟）",
    above_by: "高出平时", below_by: "低于平时", clear_by: "解除于平时以上",
  },
  rw: {
    above: "{m}高于 {v}{u}", below: "{m}低于 {v}{u}", for: "持续 {d}", clear_above: "回落到 {v}{u} 以下时解除",
    clear_below: "回升到 {v}{u} 以上时解除", override: "老人有个人设定时按个人设定",
    baseline_above: "{m}比本人平时（近 {days} 天同一时段的中位数）高出 {v}{u}", baseline_below: "{m}比本人平时（近 {days} 天同一时段的中位数）低 {v}{u}",
    baseline_clear: "回到平时 ±{v}{u} 以内时解除", baseline_min: "至少需要 {n} 天数据",
    events: "设备报告“{e}”", clear_events: "“{e}”时解除", manual: "直到有人处理",
    verify: "先等 {d}：佩戴者在此期间“{e}”就不通知（仍记录）", persist: "持续 {d} 才通知，否则记为预报警",
    absence: "{d} 没有收到设备信号", count: "{w} 内“{e}” {n} 次", zone: "离开安全区域持续 {d}",
    all: "同时满足：", any: "满足任一：", unchanged: "{m} {d} 没有变化", event_within: "{d} 内有“{e}”",
    unit_scope: "（同一户的设备）", active: "仅在 {days} {hours}", every_day: "每天",
    where_building: "只看楼栋门", where_entrance: "只看院落大门",
  },
  rules_days: { mon: "周一", tue: "周二", wed: "周三", thu: "周四", fri: "周五", sat: "周六", sun: "周日" },
  dur: { d: "{n} 天", h: "{n} 小时", m: "{n} 分钟", s: "{n} 秒" },
  what_happened: "发生了什么", what: "事件",
  review_keys: {
    alerts_by_kind: "各类告警", by_kind: "各类告警", kind: "类型", rule_id: "规则", count: "数量", alerts: "告警数",
    time_to_ack: "确认用时", time_to_acknowledge: "确认用时", time_to_resolve: "解决用时", ack: "确认用时", resolve: "解决用时",
    median: "中位数", p50: "中位数", p90: "90%分位", median_s: "中位数（秒）", p90_s: "90%分位（秒）",
    escalations: "升级次数", escalated: "升级次数", staff_unreachable: "无法联系的值班人员", unreachable: "无法联系",
    false_alarms: "误报", low_battery: "低电量设备", offline_longest: "离线最久的设备", offline: "离线设备",
    device_id: "设备", building: "楼栋", staff_id: "工号", name: "姓名", hours: "小时", offline_s: "离线时长（秒）",
    battery: "电量", total: "合计", week: "周", since: "自", until: "至", value: "数值",
  },
};

const EN = {
  title: "Jiayuan · Staff console", brand: "Jiayuan", brand_sub: "Staff console",
  nav_board: "Alerts", nav_devices: "Devices", nav_residents: "Residents", nav_ops: "Ops",
  live: "Live", offline_conn: "Connection lost, reconnecting…", connecting: "Connecting…",
  sound_on: "Sound: on", sound_off: "Sound: off", sound_enable: "Tap to enable sound",
  staff_none: "Set staff id", staff_is: "Staff {id}", staff_prompt: "Your staff id (e.g. sec-ctl-1, care-C03-01)",
  lang_switch: "中文", save: "Save", cancel: "Cancel", retry: "Retry",
  sign_in: "Sign in", sign_in_title: "Sign in to the duty console", password: "Password", sign_out: "Sign out",
  wrong_credentials: "Wrong staff id or password", too_many: "Too many failed attempts: try again in {s} s",
  acting_as: "Acting as {id}", health_hidden: "Health data is shown only to the resident's caretakers",
  roles: { admin: "Admin", security: "Security", caretaker: "Caretaker", manager: "Manager", operator: "Operator", district_manager: "District manager" },
  banner_wait: "{what} not acknowledged", banner_in: "{i} ({n})",
  n_incidents: { one: "{n} incident", other: "{n} incidents" },
  n_alarms: { one: "{n} alarm", other: "{n} alarms" }, n_alerts: { one: "{n} alert", other: "{n} alerts" },
  filter_status: "Status", filter_kind: "Kind", filter_building: "Building", all: "All",
  filter_community: "Community", community_n: "Community {c}",
  outside_filters: "Unacknowledged alerts outside these filters: {n}", show_all: "Show all",
  status_open: "Open", board_empty: "No alerts match", board_more: "{n} more not shown",
  board_loading: "Loading alerts…", board_load_failed: "Could not load the alerts; retrying…", board_refresh_failed: "Could not refresh the alerts; retrying…",
  ack: "Acknowledge", ack_short: "Ack", resolve: "Resolve", details: "Details", acked_by: "Acknowledged by {by}",
  resolved_by: "Resolved by {by}",
  dlg_ack: "Acknowledge alert", dlg_resolve: "Resolve alert", note: "Note", note_ph: "What is happening (optional)",
  staff_id: "Staff id", submit_ack: "Acknowledge", submit_resolve: "Mark resolved",
  q_ack: ["On my way", "Called the resident", "Family informed"],
  q_resolve: ["False alarm", "On site, person safe", "Taken to hospital", "Battery replaced"],
  refused: "Refused",
  where: "Where", device: "Device", resident: "Resident", started: "Started", raised: "Raised",
  last_match: "Latest match", matches: "Matches", late_flag: "Late data", offline_flag: "Device offline",
  history: "History", chart_around: "Readings around the alert", no_readings: "No readings in this period",
  events_around: "Device events", compound: "Compound", building: "Building", unit: "Unit",
  not_found: "Not found", loading: "Loading…", load_failed: "Could not load",
  devices_title: "Device health", registered: "Registered", unregistered: "Unregistered devices",
  online: "Online", offline: "Offline", no_status: "No status", never_seen: "Never seen", silent: "Silent",
  low_battery: "Low battery", last_seen: "Last seen", battery: "Battery", entrance: "{c} entrance",
  fw: "Firmware", first_seen: "First seen", state_since: "State since", open_alerts: "Open alerts",
  recent_events: "Recent events", none: "None", all_fine: "All fine",
  only_trouble: "Only buildings with trouble",
  residents_title: "My residents", residents_all: "Residents", caretaker_id: "Caretaker id", caretakers: "Caretakers", show: "Show",
  primary: "Primary", backup: "Backup", vitals: "Latest vitals", today: "Today", steps: "Steps",
  readings_today: "{n} readings today", worn: "Worn", not_worn: "Not worn", no_residents: "No residents found",
  no_wearable: "No wearable registered", set_staff_first: "Set your staff id first",
  ops_title: "Operations", mqtt: "MQTT session", connected: "Connected", disconnected: "Disconnected",
  rate: "Ingest rate", per_s: "msg/s", lag: "Journal lag", queue: "Queued", commit_mean: "Mean commit",
  duplicates: "Duplicates", ingest_errors: "Ingest errors", stream_clients: "Live clients",
  received_total: "Messages received", dead_letters: "Dead letters",
  since_start: "Since start", all_time: "All time", latest_dead: "Latest dead letters", show_payload: "Payload",
  sev: { critical: "Critical", major: "Major", minor: "Minor", warning: "Warning", info: "Info" },
  sig: { alarm: "Alarm", supervisory: "Supervisory", trouble: "Trouble" },
  st: { firing: "Firing", acknowledged: "Acknowledged", resolved: "Resolved" },
  kinds: { wearable: "Wearable", smoke: "Smoke detector", gate: "Gate", system: "System", building: "Building" },
  act: {
    raised: "Raised", rematched: "Matched again", acknowledged: "Acknowledged", resolved: "Resolved",
    auto_resolved: "Cleared", offline: "Device offline", online: "Device online", note: "Note",
    notified: "Notified", escalated: "Escalated", muted: "Muted",
  },
  by_rule: "rule", by_system: "system", alerts_st: "{st} alerts",
  ev: {
    fall: "Fall", sos: "SOS", removed: "Taken off", worn: "Put on", low_battery: "Low battery",
    alarm: "Smoke alarm", alarm_clear: "Alarm cleared", fault: "Fault", fault_clear: "Fault cleared",
    tamper: "Tamper", test: "Test", fall_cancelled: "Fall cancelled", granted: "Granted", denied: "Denied", forced: "Forced open",
    held_open: "Held open", closed: "Closed", online: "Online", offline: "Offline", status: "Status",
  },
  metrics: {
    heart_rate: "Heart rate", spo2: "SpO₂", skin_temp_c: "Skin temperature", battery: "Battery",
    steps: "Steps", obscuration_pct_m: "Obscuration", temperature_c: "Temperature", co_ppm: "CO",
  },
  reasons: {
    too_large: "Over 4 KiB", bad_utf8: "Not UTF-8", not_json: "Not JSON", not_object: "Not a JSON object",
    unknown_topic: "Unknown topic", missing_field: "Missing field", wrong_type: "Wrong type",
    out_of_range: "Out of range", bad_value: "Bad value", unknown_community: "Unknown community",
    too_deep: "Nested too deep", too_large_number: "Number too large", duplicate_key: "Duplicate key",
    lone_surrogate: "Invalid Unicode escape", journal_refused: "Refused by the journal",
  },
  rules: {
    wearable_fall: "Fall detected", wearable_sos: "SOS call", wearable_heart_rate_high: "Heart rate high",
    wearable_heart_rate_low: "Heart rate low", wearable_spo2_low: "Blood oxygen low",
    wearable_removed: "Wearable taken off", wearable_silent: "Wearable silent",
    wearable_low_battery: "Wearable battery low", wearable_outside_area: "Resident outside their area",
    wearable_heart_rate_above_baseline: "Heart rate high for this resident",
    wearable_heart_rate_high_at_rest: "Heart rate high at rest", gate_opened_at_night: "Building door opened at night",
    smoke_alarm: "Smoke alarm", smoke_co_high: "Carbon monoxide high", smoke_fault: "Smoke detector fault",
    smoke_tamper: "Smoke detector tampered with", smoke_low_battery: "Smoke detector battery low",
    smoke_battery_level_low: "Smoke detector battery level low", smoke_silent: "Smoke detector silent",
    gate_forced: "Gate forced open", gate_held_open: "Gate held open", gate_denied_repeated: "Gate: repeated denied entries",
    gate_tamper: "Gate reader tampered with",
    fire_confirmed: "Fire confirmed", building_trouble: "Many devices of one building in trouble",
    staff_unreachable: "Staff member unreachable", timeseries_store_unreachable: "Time-series store unreachable",
    nobody_reached: "Alerts reached nobody",
  },
  kind_alert: "{k} alert",
  bldg: "Building {n}", cmpd: "Compound {n}", entrance_unit: "flat {e}-{r}", floor_n: "floor {n}", room: "Room",
  floor: "Floor", unit_label: "Unit", devices_label: "Devices", dev_floor: "floor {n}",
  filters: "Filters", folded: "{n} {what} (not for {role})", show_folded: "Show", hide_folded: "Hide",
  fold_what: "device warnings (low battery…)", incident_more: "{n} more of the same incident:", incident: "Incident",
  told: "Who was told", told_step: "Told {who} (step {step})", told_repeat: "Reminded {who}",
  told_update: "Updated {who}", told_nobody: "Step {step}: nobody on duty ({sel})",
  delivered: "delivered", delivery_failed: "not delivered", delivery_pending: "sending", list_sep: ", ", no_channel: "no notification channel", already_told: "{who} already knew (step {step})",
  fallback_desk: "passed to the security desk and the duty manager",
  told_nobody_new: "Step {step}: nobody new to tell, skipped", reached_nobody: "Reached nobody",
  false_alarm_line: "False alarm", incident_line: "Joined an incident", false_alarm: "False alarm (nothing happened)", no_channel_short: " (no channel)", not_told_step: "Step {step}: {who} has no notification channel, not told",
  acked_line: "Acknowledged by {who}", nobody_acked: "Nobody has acknowledged yet", delivery_details: "Delivery details",
  unreachable: "{who} cannot be reached", escalated_line: "Escalated to step {step}",
  cancelled_line: "Messages not sent yet were cancelled", no_deliveries: "No message sent yet",
  note_late: "Raised from late readings", note_wait: "Paging waits {s} s for verification (the wearer may cancel)",
  note_cleared: "The rule cleared",
  note_cancelled: "Cancelled on the device after {after} s, within the {within} s window: nobody was paged",
  note_cancelled_late: "Cancelled on the device after {after} s, after the window: the first page had gone out",
  note_preallarm: "Did not persist {persist} s (cleared after {after} s): a pre-alarm, nobody was paged",
  name_label: "Name", edit_label: "Change name", label_ph: "e.g. Mrs Wang", resident_id: "Id", choose_caretaker: "Caretaker", everyone: "All residents",
  caretaker_refused: "Cannot list by this caretaker",
  nav_duty: "Duty", duty_title: "Duty coverage", duty_intro: "Who a new alert would page first at each time of the week (per chain and building), and when nobody would be.",
  duty_all_week: "All week", duty_next_day: "next day", duty_entrance: "{c} entrance", duty_nobody: "{route}: nobody on duty",
  duty_nobody_short: "nobody", duty_residents: "{n} residents without anyone", duty_holes_title: "Times with nobody on duty ({n})",
  duty_no_holes: "Every hour of the week is covered.", duty_step: "step {n}", duty_fallback: "security desk and duty manager only",
  duty_place: "Place", duty_chain: "Chain", duty_first: "Paged first", duty_absent: "The duty coverage API is not available (needs a newer service).",
  duty_days: { Mon: "Mon", Tue: "Tue", Wed: "Wed", Thu: "Thu", Fri: "Fri", Sat: "Sat", Sun: "Sun" },
  duty_routes: { security: "Security", caretaker: "Care", manager: "Management", operator: "Operations" },
  nav_review: "Review", review_title: "Weekly review", week: "Week", review_absent: "The weekly review API is not available (needs a newer service).",
  csv: "Download CSV", review_empty: "No data for this week", review_all: "All alerts", review_kind: "Kind",
  review_raised: "Raised", review_ack: "To acknowledge (median / 90%)", review_resolve: "To resolve (median / 90%)",
  review_unreached: "Reached nobody", review_times: "{n} times", review_offline_for: "Offline for",
  usual_at: "Usual {m} of this resident around {at}:", usual_days: " (median ± spread, last {days} days)", usual_how: "{n} of the last {days} days have data at this hour",
  usual_unknown: "Usual {m} around {at}: not enough history yet (needs {min} days)", reading_then: "At the alert",
  nav_rules: "Rules", page_refused: "Your role may not open this page", rules_title: "Alert rules",
  nav_commission: "Commissioning",
  commission: {
    title: "Commissioning", intro: "These devices report but have no place in the registry. Once registered, their alerts page the staff of their place (a wearable's: of its wearer).",
    nothing_yet: "Nothing yet", withheld: "Health values not shown: {fields}", floor: "Floor", room: "Room", name: "Name (optional)",
    register: "Register", registered_to: "Registered to {place}", password_once: "The device's MQTT password (shown this once):",
    accounts_not_managed: "The service does not keep the MQTT accounts: make the device's account separately", messages: "{n} messages",
    streams: { telemetry: "Telemetry", event: "Event", status: "Status" },
    import_title: "Import a registry spreadsheet", import_intro: "Choose a spreadsheet: .xlsx (a sheet per section: buildings/devices/residents/staff) or .csv. Preview what it changes, then apply it.",
    preview: "Preview changes", diff_of: "What {file} changes:", no_changes: "Same as the registry: nothing changes", apply: "Apply these changes",
    applied: "Applied: {changes}", stale: "The registry changed since the preview: preview again", empty: "(none)", removed: "removed", retired: "retired from the registry",
    section_counts: "{section}: {a} added, {r} removed, {c} changed",
    sections: { buildings: "Buildings", devices: "Devices", residents: "Residents", staff: "Staff" },
  },
  rules_intro: "When each rule raises an alert and whom it pages. Change a number and try it on past data: how many alerts a day more or fewer.",
  rules_try: "Try", rules_try_title: "Try a change", rules_pick: "Rule", rules_from: "From", rules_to: "To",
  rules_run: "Run on past data", rules_running: "Replaying past data… (a few minutes for many days)", rules_busy: "Another trial is running: try again shortly",
  rules_file: "Or paste a rule file (YAML)", rules_file_run: "Try this file", rules_no_change: "Change at least one number first",
  rules_range_bad: "At most 31 days, and the end not before the start",
  rules_result: "{from} to {to} ({n} days)", rules_sentence: "With the change: {tried} alerts; with the rules in force: {now} — {diff}.",
  rules_actual: "Actually raised in this time: {n}.", rules_more: "{n} more", rules_fewer: "{n} fewer", rules_same: "no difference",
  rules_new_rule: "The new rule: {tried} alerts (not among the rules in force).", rules_gone: "Rules in force: {now}; the file has no such rule.",
  rules_day: "Day", rules_col_now: "In force", rules_col_tried: "Changed", rules_col_diff: "Difference", rules_col_actual: "Raised", rules_short: { now: "Now", tried: "New", diff: "Diff", actual: "Real" },
  rules_replayed: "{rows} readings replayed in {s} s", rules_unchanged: "The other rules are unchanged.", rules_per_day: "Per day",
  rules_disabled: "Disabled", rules_pages: "Pages {who}", rules_change_this: "Try a change",
  rules_route: { security: "security", caretaker: "the resident's caretakers", manager: "the duty manager", operator: "operations" },
  rules_fields: {
    above: "Above", below: "Below", clear: "Clears at", for: "For (minutes)", threshold: "Times", window: "Within (minutes)",
    above_by: "Above usual by", below_by: "Below usual by", clear_by: "Clears within usual +",
  },
  rw: {
    above: "{m} above {v}{u}", below: "{m} below {v}{u}", for: "for {d}", clear_above: "clears below {v}{u}",
    clear_below: "clears above {v}{u}", override: "a resident's own level replaces it",
    baseline_above: "{m} {v}{u} above the resident's usual (median at this hour, last {days} days)",
    baseline_below: "{m} {v}{u} below the resident's usual (median at this hour, last {days} days)",
    baseline_clear: "clears within {v}{u} of usual", baseline_min: "needs {n} days of history",
    events: "the device reports “{e}”", clear_events: "clears on “{e}”", manual: "stays until someone resolves it",
    verify: "waits {d}: if the wearer reports “{e}” meanwhile, nobody is paged (still recorded)",
    persist: "pages only if it lasts {d}, else a pre-alarm",
    absence: "nothing heard from the device for {d}", count: "“{e}” {n} times within {w}", zone: "outside the safe area for {d}",
    all: "all of:", any: "any of:", unchanged: "{m} unchanged for {d}", event_within: "“{e}” within {d}",
    unit_scope: " (devices of one home)", active: "only {days} {hours}", every_day: "every day",
    where_building: "building doors only", where_entrance: "compound entrances only",
  },
  rules_days: { mon: "Mon", tue: "Tue", wed: "Wed", thu: "Thu", fri: "Fri", sat: "Sat", sun: "Sun" },
  dur: { d: "{n} d", h: "{n} h", m: "{n} min", s: "{n} s" },
  what_happened: "What happened", what: "What",
  review_keys: {
    alerts_by_kind: "Alerts by kind", by_kind: "Alerts by kind", kind: "Kind", rule_id: "Rule", count: "Count", alerts: "Alerts",
    time_to_ack: "Time to acknowledge", time_to_acknowledge: "Time to acknowledge", time_to_resolve: "Time to resolve",
    ack: "Time to acknowledge", resolve: "Time to resolve", median: "Median", p50: "Median", p90: "90th percentile",
    median_s: "Median (s)", p90_s: "90th percentile (s)", escalations: "Escalations", escalated: "Escalations",
    staff_unreachable: "Staff unreachable", unreachable: "Unreachable", false_alarms: "False alarms",
    low_battery: "Low battery", offline_longest: "Offline longest", offline: "Offline", device_id: "Device",
    building: "Building", staff_id: "Staff id", name: "Name", hours: "Hours", offline_s: "Offline (s)",
    battery: "Battery", total: "Total", week: "Week", since: "Since", until: "Until", value: "Value",
  },
};

export const UNITS = {
  heart_rate: "bpm", spo2: "%", skin_temp_c: "°C", battery: "%", steps: "",
  obscuration_pct_m: "%/m", temperature_c: "°C", co_ppm: "ppm",
};

const DICTS = { zh: ZH, en: EN };
let lang = "zh";
try {
  lang = localStorage.getItem("jy.lang") === "en" ? "en" : "zh";
} catch { /* storage blocked: Chinese */ }

export function getLang() { return lang; }
export function locale() { return lang === "en" ? "en-GB" : "zh-CN"; }

export function setLang(l) {
  lang = l === "en" ? "en" : "zh";
  try { localStorage.setItem("jy.lang", lang); } catch { /* not remembered */ }
  document.documentElement.lang = locale();
}

/** The word for `key` ("a.b" looks inside groups), with {name} filled from `vars`. */
export function t(key, vars) {
  let v = key.split(".").reduce((o, k) => (o == null ? o : o[k]), DICTS[lang]);
  if (v === undefined) v = key.split(".").reduce((o, k) => (o == null ? o : o[k]), EN);
  if (typeof v !== "string") return v ?? key.split(".").pop();
  return vars ? v.replace(/\{(\w+)\}/g, (_, k) => String(vars[k] ?? "")) : v;
}

/** t() for a count `n`: the word's form for `n` where the language has forms (`{ one, other }`),
 * `{n}` filled in. */
export function tn(key, n) {
  const v = t(key);
  const form = typeof v === "string" ? v : v[new Intl.PluralRules(locale()).select(n)] ?? v.other;
  return form.replace("{n}", String(n));
}

/** Like t(), but as nodes: each filled-in value in a span of its own that never breaks inside
 * (staff ids, device ids), the words between free to wrap. Needs `h` from util.js (passed in to
 * keep this module free of the DOM helpers). */
export function words(h, key, vars) {
  const v = t(key);
  return v.split(/(\{\w+\})/).filter(Boolean).map((part) => {
    const m = /^\{(\w+)\}$/.exec(part);
    return m ? h("span", { class: "nobr", text: String(vars[m[1]] ?? "") }) : part;
  });
}

const CJK = /[\u3400-\u9fff]/;

/** What an alert is about, in the reader's language: the service's title in it when it sends
 * one (``title_zh``/``title_en``, or ``title`` when it is in this language), else the console's
 * own word for the rule, else (English only) the rule's summary — never English on the Chinese
 * console. */
export function alertTitle(a) {
  const own = a[`title_${lang}`];
  if (own) return own;
  if (a.title && CJK.test(a.title) === (lang === "zh")) return a.title;
  const ours = DICTS[lang].rules[a.rule_id];
  if (ours) return ours;
  if (lang === "en" && a.summary) return a.summary;
  if (a.summary && CJK.test(a.summary)) return a.summary;
  return t("kind_alert", { k: t(`kinds.${a.kind}`) });
}

/** Every rule the console has a title for, per language (tests). */
export function titledRules() {
  return { zh: Object.keys(ZH.rules), en: Object.keys(EN.rules) };
}

/** Who did it: a staff id, or the rule / the service in words. */
export function actor(by) {
  if (by === "rule") return t("by_rule");
  if (by === "system") return t("by_system");
  return by;
}

# Slack Block Kit helpers shared by Herald's built-in templates.
package herald.lib.slack

import data.herald.lib.text

# esc(x): Slack mrkdwn needs &, < and > escaped in text; links are written with link().
esc(x) = replace(replace(replace(text.str(x), "&", "&amp;"), "<", "&lt;"), ">", "&gt;")

mrkdwn(s) = {"type": "mrkdwn", "text": s}

section(s) = {"type": "section", "text": mrkdwn(s)}

# link(url, label): <url|label>, or just the label when there is no url.
link(url, label) = sprintf("<%s|%s>", [url, esc(label)]) {
	url != ""
}

link(url, label) = esc(label) {
	url == ""
}

# field_sections(fields): Slack allows at most 10 fields (5 two-column rows) per section.
field_sections(fields) = [{"type": "section", "fields": chunk} | chunk := text.chunks(fields, 10)[_]]

# table(caption, headers, rows): a caption section, then the rows (two mrkdwn fields each,
# headers first) in sections of five rows; nothing when there are no rows.
table(caption, headers, rows) = [] {
	count(rows) == 0
}

table(caption, headers, rows) = array.concat([section(caption)], field_sections(fields)) {
	count(rows) > 0
	cells := array.concat([headers], rows)
	fields := [mrkdwn(c) | c := cells[_][_]]
}

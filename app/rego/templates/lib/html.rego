# HTML helpers shared by Herald's built-in templates: Postee's table style, with text escaped.
package herald.lib.html

import data.herald.lib.text

# esc(x): text with &, < and > escaped (event data must not inject markup).
esc(x) = replace(replace(replace(text.str(x), "&", "&amp;"), "<", "&lt;"), ">", "&gt;")

# attr(x): text for a quoted attribute value
attr(x) = replace(replace(esc(x), "'", "&#39;"), "\"", "&#34;")

colored(color, s) = sprintf("<span style='color:%s'>%s</span>", [color, s])

link(href, label) = sprintf("<a href='%s'>%s</a>", [attr(href), esc(label)])

p(s) = sprintf("<p>%s</p>\n", [s])

h(level, s) = sprintf("<h%d>%s</h%d>\n", [level, s, level])

# table(headers, rows): cells are HTML already (escape text with esc first); no header row when
# headers is empty.
table(headers, rows) = concat("\n", array.concat(array.concat([table_open], header_rows(headers)), array.concat(body_rows(rows), [table_close]))) {
	true
}

table_open := "<TABLE border='1' style='width: 100%; border-collapse: collapse;'>"

table_close := "</TABLE>\n"

header_rows(headers) = [] {
	count(headers) == 0
}

header_rows(headers) = [row("TH", headers)] {
	count(headers) > 0
}

body_rows(rows) = [row("TD", cells) | cells := rows[_]]

row(tag, cells) = concat("", ["<TR>\n", concat("", [sprintf("<%s style='padding: 5px;'>%s</%s>", [tag, c, tag]) | c := cells[_]]), "\n</TR>"])

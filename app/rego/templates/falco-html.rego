# Falco alert as HTML (Herald's own template; Postee had none): the alert's details, then its
# output fields as a table.
package herald.falco.html

import data.herald.lib.falco
import data.herald.lib.html

title := falco.title

fields_table := "" {
	count(falco.field_rows) == 0
} else = concat("", [html.h(3, "Output fields"), html.table(["Field", "Value"], [[html.esc(r[0]), html.esc(r[1])] | r := falco.field_rows[_]])]) {
	true
}

result := concat("", array.concat([html.p(sprintf("<b>%s:</b> %s", [l[0], html.esc(l[1])])) | l := falco.lines[_]], [fields_table]))

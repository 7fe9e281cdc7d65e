# Falco alert as Slack blocks (Herald's own template; Postee had none): one section per detail,
# then the output fields two columns wide.
package herald.falco.slack

import data.herald.lib.falco
import data.herald.lib.slack

title := falco.title

details := [slack.section(sprintf("*%s:* %s", [l[0], slack.esc(l[1])])) | l := falco.lines[_]]

output_fields := slack.table("*Output fields*", ["*Field*", "*Value*"], [[slack.esc(r[0]), slack.esc(r[1])] | r := falco.field_rows[_]])

result := array.concat(details, output_fields)

# Tracee finding as Slack blocks: one section per detail. Postee's package and layout, written
# for Herald (see tracee-html.rego for the details shown).
package postee.tracee.slack

import data.herald.lib.slack
import data.herald.lib.tracee

title := tracee.title

result := [slack.section(sprintf("*%s:* %s", [label, slack.esc(value)])) | line := tracee.lines[_]; label := line[0]; value := line[1]]

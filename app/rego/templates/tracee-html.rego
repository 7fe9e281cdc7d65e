# Tracee finding as HTML paragraphs. Postee's package and layout, written for Herald: the MITRE
# details are the technique and category (Postee printed the whole Properties object), plus the
# workload the detection came from when Tracee reports it.
package postee.tracee.html

import data.herald.lib.html
import data.herald.lib.tracee

title := tracee.title

result := concat("", [html.p(sprintf("%s: %s", [label, html.esc(value)])) | line := tracee.lines[_]; label := line[0]; value := line[1]])

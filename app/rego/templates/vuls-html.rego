# Aqua image-scan webhook as an HTML report (email, ServiceNow, Teams). Same package, input and
# layout as Postee's vuls-html.rego, written for Herald; event text is HTML-escaped.
package postee.vuls.html

import data.herald.lib.aqua
import data.herald.lib.aquahtml

title := sprintf("%s vulnerability scan report", [aqua.image])

url := aqua.url

aggregation_pkg := "postee.vuls.html.aggregation"

result := concat("", [
	aquahtml.paragraphs(array.concat([sprintf("Image name: %s", [aqua.image]), sprintf("Registry: %s", [aqua.registry])], aqua.status_lines)),
	aquahtml.severity_stats,
	aquahtml.assurance_controls(2, aqua.assurance_checks),
	aquahtml.vulnerability_tables,
	aquahtml.malware,
	aquahtml.sensitive_data,
	aquahtml.see_more(aqua.url, aqua.href_text),
])

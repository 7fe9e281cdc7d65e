# Aqua image-scan webhook as Slack blocks. Same package, input and layout as Postee's
# vuls-slack.rego, written for Herald: sections only for what the scan found, at most 10 fields
# per section (Slack's limit), event text escaped for mrkdwn.
package postee.vuls.slack

import data.herald.lib.aqua
import data.herald.lib.slack
import data.herald.lib.text

title := sprintf("%s vulnerability scan report", [aqua.image])

url := aqua.url

aggregation_pkg := "postee.vuls.slack.aggregation"

header := [slack.section(slack.esc(line)) | line := array.concat([sprintf("Image name: %s", [aqua.image]), sprintf("Registry: %s", [aqua.registry])], aqua.status_lines)[_]]

severity_stats := [{"type": "section", "fields": [slack.mrkdwn(cell) | sev := aqua.severities[_]; cell := [sprintf("*%s*", [upper(sev)]), sprintf("*%s*", [text.str(aqua.summary_count(sev))])][_]]}]

assurance_controls := slack.table("*Assurance controls*", ["*#* *Control*", "*Policy Name* / *Status*"], [[slack.esc(sprintf("%s %s", [c[0], c[1]])), slack.esc(sprintf("%s / %s", [c[2], c[3]]))] | c := aqua.assurance_checks[_]])

found_vulnerabilities := [] {
	count([sev | sev := aqua.severities[_]; count(aqua.vulnerabilities(sev)) > 0]) == 0
} else = array.concat([slack.section("*Found vulnerabilities*")], [block | sev := aqua.severities[_]; block := vulnerability_sections(sev)[_]]) {
	true
}

vulnerability_sections(sev) = slack.table(
	sprintf("*%s severity vulnerabilities*", [text.capitalised(sev)]),
	["*Vulnerability ID*", "*Resource name / Installed version / Fix version*"],
	[[slack.esc(v[0]), slack.esc(concat(" / ", [v[1], v[2], v[3]]))] | v := aqua.vulnerabilities(sev)[_]],
)

malware := slack.table("*Malware*", ["*#* *Malware*", "*Hash / Path*"], [[slack.esc(sprintf("%d %s", [i + 1, m[0]])), slack.esc(sprintf("%s / %s", [m[1], m[2]]))] | m := aqua.malware[i]])

sensitive_data := slack.table("*Sensitive data*", ["*File name*", "*Path / Type / Hash*"], [[slack.esc(s[0]), slack.esc(concat(" / ", [s[1], s[2], s[3]]))] | s := aqua.sensitive_data[_]])

see_more := [] {
	aqua.url == ""
} else = [slack.section(sprintf("See more: %s", [slack.link(aqua.href, aqua.href_text)]))] {
	true
}

result := array.concat(
	array.concat(array.concat(header, severity_stats), array.concat(assurance_controls, found_vulnerabilities)),
	array.concat(array.concat(malware, sensitive_data), see_more),
)

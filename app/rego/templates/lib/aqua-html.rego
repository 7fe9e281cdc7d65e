# HTML sections of an Aqua image-scan report, shared by postee.vuls.html and postee.servicenow.
#
# Functions here take other packages' documents as arguments instead of reading them through an
# import alias: regorus 0.13 leaves a function undefined when its body reads a document through
# an import alias and a rule of the same package was evaluated earlier in the query.
package herald.lib.aquahtml

import data.herald.lib.aqua
import data.herald.lib.html
import data.herald.lib.text

escaped(rows) = [[html.esc(c) | c := r[_]] | r := rows[_]]

paragraphs(lines) = concat("", [html.p(html.esc(line)) | line := lines[_]])

severity_stats := html.table([], [[sev, html.colored(aqua.colors[sev], html.esc(aqua.summary_count(sev)))] | sev := aqua.severities[_]])

# assurance_controls(level, checks): the heading at that level and the checks table ("" without
# checks); call it with aqua.assurance_checks.
assurance_controls(level, checks) = "" {
	count(checks) == 0
} else = concat("", [html.h(level, "Assurance controls"), html.table(["#", "Control", "Policy Name", "Status"], escaped(checks))]) {
	true
}

vulnerability_tables := concat("", [vulnerability_table(sev) | sev := aqua.severities[_]])

vulnerability_table(sev) = "" {
	count(aqua.vulnerabilities(sev)) == 0
} else = concat("", [
	html.h(3, sprintf("%s severity vulnerabilities", [text.capitalised(sev)])),
	html.table(["Vulnerability ID", "Resource name", "Installed version", "Fix version"], escaped(aqua.vulnerabilities(sev))),
]) {
	true
}

malware := "" {
	count(aqua.malware) == 0
} else = concat("", [html.h(2, "Malware"), html.table(["#", "Malware", "Hash", "Path"], escaped([array.concat([sprintf("%d", [i + 1])], m) | m := aqua.malware[i]]))]) {
	true
}

sensitive_data := "" {
	count(aqua.sensitive_data) == 0
} else = concat("", [html.h(2, "Sensitive data"), html.table(["File name", "Path", "Type", "Hash"], escaped(aqua.sensitive_data))]) {
	true
}

# see_more(href, label): the console link paragraph; "" when there is no link (no aqua-server)
see_more(href, label) = "" {
	href == ""
} else = html.p(sprintf("See more: %s", [html.link(href, label)])) {
	true
}


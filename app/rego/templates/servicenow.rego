# Aqua scan webhook (image, function or VM) as a ServiceNow incident: an HTML report plus the
# ServiceNow extras. Same package, input and layout as Postee's servicenow.rego, written for Herald.
package postee.servicenow

import data.herald.lib.aqua
import data.herald.lib.aquahtml
import data.herald.lib.html
import data.herald.lib.text

report_type := "function" {
	input.entity_type == 1
} else = "vm" {
	input.entity_type == 2
} else = "image" {
	true
}

title := sprintf("Aqua security | %s | %s | Scan report", [report_type, aqua.image])

# AquaServer is <aqua-server>/#/images/; the other console pages hang off <aqua-server>/#/
console := trim_suffix(aqua.aqua_server, "images/")

link_path := sprintf("functions/%s/%s", [urlquery.encode(aqua.registry), urlquery.encode(aqua.image)]) {
	report_type == "function"
} else = sprintf("infrastructure/%s/node", [urlquery.encode(aqua.image)]) {
	report_type == "vm"
} else = sprintf("image/%s/%s", [urlquery.encode(aqua.registry), urlquery.encode(aqua.image)]) {
	true
}

link_text := sprintf("functions/%s/%s", [aqua.registry, aqua.image]) {
	report_type == "function"
} else = sprintf("infrastructure/%s/node", [aqua.image]) {
	report_type == "vm"
} else = sprintf("image/%s/%s", [aqua.registry, aqua.image]) {
	true
}

url := "" {
	console == ""
} else = concat("", [console, link_path]) {
	true
}

aggregation_pkg := "postee.vuls.html.aggregation"

result := concat("", [
	aquahtml.paragraphs(array.concat([sprintf("Name: %s", [aqua.image]), sprintf("Registry: %s", [aqua.registry])], aqua.status_lines)),
	html.h(3, "Vulnerability summary"),
	aquahtml.severity_stats,
	aquahtml.assurance_controls(3, aqua.assurance_checks),
	aquahtml.vulnerability_tables,
	aquahtml.malware,
	aquahtml.sensitive_data,
	aquahtml.see_more(url, concat("", [console, link_text])),
])

result_date := input.scan_started.seconds

result_category := "Serverless functions Scanning" {
	report_type == "function"
} else = "Security - VM Scan results" {
	report_type == "vm"
} else = "Security Image Scan results" {
	true
}

result_subcategory := "Security incident"

# ServiceNow takes one user and one group: set only when the event names exactly one
result_assigned_to := only(object.get(input, "application_scope_owners", []))

result_assigned_group := only(object.get(input, "application_scope", []))

only(xs) = text.str(xs[0]) {
	is_array(xs)
	count(xs) == 1
} else = "" {
	true
}

result_severity := 1 {
	aqua.summary_count("critical") > 0
} else = 2 {
	aqua.summary_count("high") > 0
} else = 3 {
	true
}

result_summary := concat("\n", array.concat(
	array.concat([sprintf("Name: %s", [aqua.image]), sprintf("Registry: %s", [aqua.registry])], aqua.status_lines),
	array.concat(
		["", "vulnerabilities:"],
		array.concat([sprintf("*   %s: %s", [sev, text.str(aqua.summary_count(sev))]) | sev := aqua.severities[_]], see_more_text),
	),
))

see_more_text := [] {
	url == ""
} else = ["", sprintf("See more: %s%s", [console, link_text])] {
	true
}

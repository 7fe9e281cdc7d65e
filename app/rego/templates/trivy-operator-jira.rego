# Trivy Operator VulnerabilityReport as a Jira issue description (wiki markup): summary totals
# and one table per severity. Postee's package and layout, written for Herald.
package postee.trivyoperator.jira

import data.herald.lib.jira
import data.herald.lib.text
import data.herald.lib.trivyoperator as report

title := report.headline

colors := {"CRITICAL": "#c00000", "HIGH": "#e0443d", "MEDIUM": "#f79421", "LOW": "#e1c930", "UNKNOWN": "#505f79"}

summary := concat("", [
	"\nh4. Summary totals:\n",
	jira.table(
		[text.capitalised(s) | s := report.severities[_]],
		[[jira.colored(colors[s], text.str(report.summary_count(s))) | s := report.severities[_]]],
	),
])

row_keys := ["vulnerabilityID", "title", "resource", "installedVersion", "fixedVersion", "primaryLink"]

severity_table(severity) = "" {
	count(report.vulnerabilities(severity)) == 0
} else = concat("", [
	sprintf("\nh4. %s severity vulnerabilities\n", [text.capitalised(severity)]),
	jira.table(
		["ID", "Title", "Resource", "Installed version", "Fixed version", "Url"],
		[[jira.esc(text.field(v, key, "none")) | key := row_keys[_]] | v := report.vulnerabilities(severity)[_]],
	),
]) {
	true
}

result := concat("", array.concat(
	[sprintf("h1. Image: %s in namespace %s\n", [jira.esc(report.image), jira.esc(report.namespace)]), summary],
	[severity_table(s) | s := report.severities[_]],
))

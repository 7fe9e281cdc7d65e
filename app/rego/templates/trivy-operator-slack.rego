# Trivy Operator VulnerabilityReport as Slack blocks: a header, summary totals in context
# blocks, then the vulnerabilities per severity with links to the advisories. Postee's package
# and layout, written for Herald.
package postee.trivyoperator.slack

import data.herald.lib.slack
import data.herald.lib.text
import data.herald.lib.trivyoperator as report

title := sprintf("Vulnerability scan report %s", [report.image])

# a header block holds at most 150 characters of plain text
header := [{"type": "header", "text": {"type": "plain_text", "text": substring(report.headline, 0, 150)}}]

summary := [
	{"type": "divider"},
	{"type": "context", "elements": [slack.mrkdwn("*Summary totals:*")]},
	{"type": "context", "elements": [slack.mrkdwn(sprintf("%s: *%s*", [text.capitalised(s), text.str(report.summary_count(s))])) | s := report.severities[_]]},
	{"type": "divider"},
]

severity_sections(severity) = [] {
	count(report.vulnerabilities(severity)) == 0
} else = array.concat(slack.table(
	sprintf("*%s severity vulnerabilities*", [text.capitalised(severity)]),
	["*Vulnerability ID*", "*Resource / Version / Fixed version*"],
	[row(v) | v := report.vulnerabilities(severity)[_]],
), [{"type": "divider"}]) {
	true
}

row(v) = [
	slack.link(text.field(v, "primaryLink", ""), text.field(v, "vulnerabilityID", "none")),
	slack.esc(concat(" / ", [text.field(v, "resource", "none"), text.field(v, "installedVersion", "none"), text.field(v, "fixedVersion", "none")])),
]

result := array.concat(array.concat(header, summary), [block | s := report.severities[_]; block := severity_sections(s)[_]])

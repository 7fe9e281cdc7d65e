# Aggregates Jira wiki reports (postee.trivy.jira): each item's title as an h1 heading followed
# by its description; the urls joined by newlines. Herald's package (Postee's trivy.jira pointed
# at a Slack aggregation by mistake).
package postee.trivy.jira.aggregation

title := "Vulnerability scan report"

# evaluating the parent package also evaluates this one with a single event as input
items := [item | is_array(input); item := input[_]; is_object(item)]

result := concat("\n", [sprintf("h1. %s\n%s", [object.get(item, "title", ""), description(item)]) | item := items[_]])

description(item) = d {
	d := object.get(item, "description", "")
	is_string(d)
} else = "" {
	true
}

url := concat("\n", [u | u := items[_].url; is_string(u); u != ""])

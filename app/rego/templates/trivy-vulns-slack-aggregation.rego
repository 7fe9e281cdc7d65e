# Aggregates Trivy Slack reports: each item's title as a section, then its blocks; the urls
# joined by newlines. Postee's package name; Postee's version read "Description" and
# "PrimaryURL" (capitalised) from the items, which have "description" and "url", so it came out
# empty.
package postee.vuls.slack.trivy.aggregation

import data.herald.lib.slack

title := "Vulnerability scan report"

# evaluating a parent package (postee.vuls.slack) also evaluates this one with an event as input
items := [item | is_array(input); item := input[_]; is_object(item)]

result := [block | item := items[_]; block := array.concat([slack.section(sprintf("*%s*", [slack.esc(object.get(item, "title", ""))]))], blocks(item))[_]]

blocks(item) = item.description {
	is_array(item.description)
} else = [slack.section(item.description)] {
	is_string(item.description)
	item.description != ""
} else = [] {
	true
}

url := concat("\n", [u | u := items[_].url; is_string(u); u != ""])

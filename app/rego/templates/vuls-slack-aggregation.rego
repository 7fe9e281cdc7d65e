# Aggregates Slack reports: each item becomes a bold title section followed by its blocks
# (a description that is not a block array becomes one text section). Postee's package.
package postee.vuls.slack.aggregation

import data.herald.lib.slack

title := "Vulnerability scan report"

# evaluating the parent package also evaluates this one with a single event as input
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

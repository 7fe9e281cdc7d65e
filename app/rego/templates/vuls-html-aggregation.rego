# Aggregates HTML reports (vuls.html, servicenow*): each item's title as <h1>, then its
# description, joined by newlines; the urls joined by newlines. Postee's package and output.
package postee.vuls.html.aggregation

import data.herald.lib.html

title := "Vulnerability scan report"

# evaluating the parent package also evaluates this one with a single event as input
items := [item | is_array(input); item := input[_]; is_object(item)]

result := concat("\n", [part | item := items[_]; part := [sprintf("<h1>%s</h1>", [html.esc(object.get(item, "title", ""))]), description(item)][_]])

description(item) = d {
	d := object.get(item, "description", "")
	is_string(d)
} else = "" {
	true
}

url := concat("\n", [u | u := items[_].url; is_string(u); u != ""])

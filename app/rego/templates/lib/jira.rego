# Jira wiki markup helpers shared by Herald's built-in templates.
package herald.lib.jira

import data.herald.lib.text

# esc(x): a table cell must not contain a line break or an unescaped markup character.
esc(x) = s {
	t := replace(replace(text.str(x), "\r", ""), "\n", " ")
	s := replace(replace(replace(replace(replace(t, "|", "\\|"), "[", "\\["), "]", "\\]"), "{", "\\{"), "}", "\\}")
}

colored(color, s) = sprintf("{color:%s}%s{color}", [color, s])

# table(headers, rows): ||h1||h2|| then |c1|c2| rows; cells are markup already. An empty cell
# is written as a space, because "||" would start a header cell.
table(headers, rows) = concat("", array.concat([sprintf("||%s||\n", [concat("||", headers)])], [sprintf("|%s|\n", [concat("|", [cell(c) | c := r[_]])]) | r := rows[_]]))

cell(c) = " " {
	c == ""
}

cell(c) = c {
	c != ""
}

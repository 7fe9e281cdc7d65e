# Text helpers shared by Herald's built-in templates (not part of Postee's API; user templates
# should keep using data.postee.* from common/).
package herald.lib.text

# str(x): a value as display text; numbers and booleans as written in JSON, null as "".
str(x) = x {
	is_string(x)
}

str(x) = sprintf("%v", [x]) {
	is_number(x)
}

str(x) = sprintf("%v", [x]) {
	is_boolean(x)
}

str(x) = "" {
	is_null(x)
}

# field(obj, key, fallback): obj[key] as text; fallback when missing, null, empty or not a scalar.
field(obj, key, fallback) = s {
	s := str(obj[key])
	s != ""
} else = fallback {
	true
}

# chunks(xs, n): xs cut into consecutive slices of at most n elements.
chunks(xs, n) = [] {
	count(xs) == 0
}

chunks(xs, n) = out {
	count(xs) > 0
	out := [array.slice(xs, i, i + n) | i := numbers.range(0, count(xs) - 1)[_]; i % n == 0]
}

# capitalised("critical") == "Critical"
capitalised(s) = concat("", [upper(substring(s, 0, 1)), lower(substring(s, 1, -1))])

# list(xs): an array of scalars as "a, b"; a scalar as its text.
list(xs) = concat(", ", [str(x) | x := xs[_]]) {
	is_array(xs)
}

list(xs) = str(xs) {
	not is_array(xs)
}

# controls(s): s without control characters (Postee strips them from fix versions).
controls(s) = regex.replace(s, "[\\x00-\\x1f\\x7f\\x{fffd}]", "")

# Helpers Postee templates import with `import data.postee.<name>`; same names and meaning as
# Postee's common.rego, written for Herald.
package postee

# with_default(obj, prop, default): obj[prop], or default when obj has no such property
with_default(obj, prop, default_value) = value {
	value := obj[prop]
}

with_default(obj, prop, default_value) = default_value {
	not obj[prop]
}

# by_flag(a, b, flag): a when flag is true, else b
by_flag(a, b, flag) = a {
	flag
}

by_flag(a, b, flag) = b {
	not flag
}

# duplicate(a, b, n): a repeated n times followed by b repeated (n - 1) times... kept for API
# compatibility: returns a when n is odd, b when n is even (alternating row colours)
duplicate(a, b, n) = a {
	n % 2 == 1
}

duplicate(a, b, n) = b {
	n % 2 == 0
}

# clamp(x, lo, hi)
clamp(x, lo, hi) = lo {
	x < lo
}

clamp(x, lo, hi) = hi {
	x > hi
}

clamp(x, lo, hi) = x {
	x >= lo
	x <= hi
}

# flat_array(a): one level of nesting removed
flat_array(a) = [o | x := a[_]; o := x[_]]

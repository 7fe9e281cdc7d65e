# Helpers Postee templates import with `import data.postee.<name>`. Same names, arities and
# results as Postee's common.rego (user templates depend on the exact semantics, including the
# odd ones noted below), written for Herald in plain Rego v0.
package postee

# by_flag(a, b, flag): a when flag holds (any value but false), b when flag is false.
by_flag(a, b, flag) = a {
	flag
}

by_flag(a, b, flag) = b {
	flag == false
}

# duplicate(a, b, col): a for column 1, b for column 2, undefined for anything else.
duplicate(a, b, col) = a {
	col == 1
}

duplicate(a, b, col) = b {
	col == 2
}

# clamp(a, b): the smaller of the two (Postee's two-argument clamp: a, capped at b).
clamp(a, b) = b {
	a > b
}

clamp(a, b) = a {
	a <= b
}

# flat_array(a): one level of nesting removed: [[x, y], [z]] -> [x, y, z].
flat_array(a) = o {
	o := [item | item := a[_][_]]
}

# with_default(obj, prop, default_value): obj[prop], or default_value when the property is
# missing *or false* (Postee tests the value's truth, so a false flag also yields the default).
with_default(obj, prop, default_value) = default_value {
	not obj[prop]
}

with_default(obj, prop, default_value) = value {
	value := obj[prop]
	value != false
}

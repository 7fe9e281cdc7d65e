# Route filter: Aqua image scans whose image name contains one of these names.
# Herald's own rewrite of Postee's filter (same file name, package and meaning). Every built-in
# filter uses rule names of its own and no `default allow`, so any of them can also be loaded
# together into one `postee` package; each defines `allow` and the files' `allow`s are ORed.
package postee

# Edit: the image names (substrings) that trigger the route.
allowed_image_names := {"ubuntu", "busybox"}

allow {
	is_string(input.image)
	contains(input.image, allowed_image_names[_])
}

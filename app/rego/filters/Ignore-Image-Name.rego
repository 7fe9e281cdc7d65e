# Route filter: every event except Aqua image scans whose image name contains one of these names
# (an event without an image name passes, as in Postee).
package postee

# Edit: the image names (substrings) that never trigger the route.
ignored_image_names := {"alpine", "postgres"}

ignored_image {
	is_string(input.image)
	contains(input.image, ignored_image_names[_])
}

allow {
	not ignored_image
}

# Route filter: AWS Security Finding Format batches produced by Trivy (a finding whose product
# name contains "Trivy"). Postee looked at the first finding only.
package postee

# Edit: the product names (substrings) that trigger the route.
trivy_aws_products := {"Trivy"}

allow {
	name := input.Findings[_].ProductFields["Product Name"]
	is_string(name)
	contains(name, trivy_aws_products[_])
}

module github.com/herald/herald/tests/goref

go 1.26

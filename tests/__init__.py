"""The test suite, laid out like the packages; a package so that same-named test files in different folders stay distinct modules."""

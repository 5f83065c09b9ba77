"""The benchmark harness behind `make bench` (not part of `make test`)."""

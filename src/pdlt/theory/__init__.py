"""The theory side: recursions named after the book's objects (kernel, criticality, ...)."""

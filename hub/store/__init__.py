"""Storage: versioned resources and their search index rows, one database transaction per interaction."""

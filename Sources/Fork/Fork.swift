// The Fork module; see README.md, "Layout".

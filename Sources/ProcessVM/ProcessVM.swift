// The ProcessVM module; see README.md, "Layout".

// The Placement module; see README.md, "Layout".

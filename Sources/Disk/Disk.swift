// The Disk module; see README.md, "Layout".

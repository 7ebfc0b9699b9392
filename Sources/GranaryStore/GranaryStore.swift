// The GranaryStore layer; see ../shared/DESIGN.md.

// The GranaryFS layer; see ../shared/DESIGN.md.

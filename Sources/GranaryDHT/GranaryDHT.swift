// The GranaryDHT layer; see ../shared/DESIGN.md.

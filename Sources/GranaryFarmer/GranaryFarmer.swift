// The GranaryFarmer layer; see ../shared/DESIGN.md.

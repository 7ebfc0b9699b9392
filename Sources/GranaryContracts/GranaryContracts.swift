// The GranaryContracts layer; see ../shared/DESIGN.md.

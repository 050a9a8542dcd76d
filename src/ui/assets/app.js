// The dashboard (to be written).

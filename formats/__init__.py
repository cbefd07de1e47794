"""Container formats: VHDX, VHD, raw; differencing chains; MBR/GPT; writers for export."""

"""Purchase summaries (RFM) and the BG/NBD and Gamma-Gamma models fitted on them."""

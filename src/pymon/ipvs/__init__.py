"""The IPVS side: the table model with its diff and in-memory twin (table), the netlink
backend (kernel), and the single writer that turns config × health × policy into the
wanted table (owner)."""

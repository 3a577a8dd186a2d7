"""mon's world: reading a mon.cf and converting it to pymon's YAML."""

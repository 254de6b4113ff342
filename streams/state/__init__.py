"""Stream state: typed stored records (:mod:`.records`), per-partition stores (:mod:`.stores`) and
tables (:mod:`.tables`)."""

"""Operations on a mirror besides sync: copy, verify, repair, catalog, listing, login."""

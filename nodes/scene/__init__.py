"""Scene stage: camera motion (Ken Burns) over stills and transitions between scene clips."""

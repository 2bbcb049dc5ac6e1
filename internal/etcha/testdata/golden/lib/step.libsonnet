// step returns a command that records its id in a trace file.
function(id, trace) {
  id: id,
  check: 'grep -qx %s %s' % [id, trace],
  change: 'echo %s >> %s' % [id, trace],
  remove: "sed -i '/^%s$/d' %s" % [id, trace],
}

local deep = import 'inner/deep.libsonnet';

{
  cmd(id, text):: {
    id: id,
    change: 'echo %s' % std.stripChars(text, '\n'),
    check: deep.check,
  },
}

local util = import '../../lib/util.libsonnet';

{
  id: 'app',
  run: [
    util.cmd('motd', importstr 'files/motd.txt'),
  ],
}

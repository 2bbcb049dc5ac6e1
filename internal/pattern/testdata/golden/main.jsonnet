// A pattern using the deterministic native functions.
local n = import 'lib/native.libsonnet';
local config = n.getConfig();

{
  audience: 'servers',
  build: [
    {
      id: 'build app',
      always: true,
      change: 'make %s' % config.vars.app,
      onChange: ['etcha:buildManifest'],
    },
  ],
  buildExec: { command: '/bin/sh -c' },
  expiresIn: '1h',
  id: 'golden',
  issuer: 'ci',
  run: [
    {
      id: 'write motd',
      check: 'grep -q %s /etc/motd' % config.vars.app,
      change: 'echo %s > /etc/motd' % n.getEnv('GREETING'),
      onChange: ['restart .*'],
    },
    [
      null,
      {
        id: 'restart app',
        change: 'systemctl restart %s' % config.vars.app,
      },
    ],
    {
      id: 'group',
      commands: [
        { id: 'inner', always: true, change: importstr 'lib/script.sh' },
      ],
    },
  ],
  runExec: { command: config.exec.command },
  runVars: {
    region: n.get(config.vars, '.site.region', 'none'),
    missing: n.get(config.vars, '.site.zone', 'default-zone'),
    isProd: n.regexMatch('^prod-', config.vars.site.name),
    rendered: n.render('{a: 1 + 2}'),
    test: config.test,
    fallbackEnv: n.getEnv('NOPE', 'fell back'),
  },
  subject: config.vars.app,
}

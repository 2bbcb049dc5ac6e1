// etcha/native.libsonnet is built into etcha (spec §5.1): import it as
// 'etcha/native.libsonnet' from any pattern or config file. It is served
// by etcha itself, never read from disk and never copied into a JWT.
//
// Each function wraps std.native('<name>') with the documented default
// arguments, which go-jsonnet natives cannot have:
//   local n = import 'etcha/native.libsonnet';
//   n.getEnv('HOME')  // instead of std.native('getEnv')('HOME', null, false)
{
  // get evaluates the jq-style filter on object, else returns default, and
  // caches the result under prefix + filter at build time. field is the
  // older spelling used by the guides: field='x' means filter='.x'.
  get(object=null, filter=null, default=null, prefix='', field=null)::
    local f =
      if filter != null then filter
      else if field != null then '.' + field
      else error 'get: pass filter (such as .a.b[0]) or field';
    std.native('get')(object, f, default, prefix),
  getArch():: std.native('getArch')(),
  getCmd(command, fallback=null, cache=false):: std.native('getCmd')(command, fallback, cache),
  getConfig():: std.native('getConfig')(),
  getEnv(key, fallback=null, cache=false):: std.native('getEnv')(key, fallback, cache),
  getFile(path, fallback=null, cache=false):: std.native('getFile')(path, fallback, cache),
  getOS():: std.native('getOS')(),
  getPath():: std.native('getPath')(),
  getRecord(type, name, fallback=null, cache=false):: std.native('getRecord')(type, name, fallback, cache),
  randStr(length):: std.native('randStr')(length),
  randString(length):: std.native('randStr')(length),
  regexMatch(regex, string):: std.native('regexMatch')(regex, string),
  render(string):: std.native('render')(string),
}

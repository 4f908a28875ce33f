# A stand-in for Open OnDemand's rendering of a batch_connect app (no OOD here), with Ruby's own
# ERB in OOD's trim mode ("-"):
#
#   ruby render.rb form   APP_DIR                  -> form.yml.erb rendered (stdout)
#   ruby render.rb submit APP_DIR VALUES.json      -> submit.yml.erb, form values as methods
#   ruby render.rb stage  APP_DIR VALUES.json DIR  -> template/ staged into DIR: *.erb rendered
#                                                    with `context` (the form values), modes kept
#   ruby render.rb view   APP_DIR CONN.json        -> view.html.erb with host, port, password
#   ruby render.rb info   APP_DIR VALUES.json      -> info.md.erb
#
# The dashboard renders form.yml.erb and submit.yml.erb with the form's attributes as methods,
# the template/ files with a `context` object, and view.html.erb with the connection values
# (connection.yml) as methods; ERB::Util and Shellwords are loaded there (Rails), as here.
require "erb"
require "fileutils"
require "json"
require "shellwords"
require "yaml"

class Values
  def initialize(values)
    @values = values.transform_keys(&:to_s)
  end

  def method_missing(name, *args)
    key = name.to_s
    return @values[key] if @values.key?(key)
    raise NameError, "the form has no attribute #{key} (known: #{@values.keys.join(', ')})"
  end

  def respond_to_missing?(name, include_private = false)
    @values.key?(name.to_s) || super
  end

  def context
    self
  end

  def get_binding
    binding
  end
end

def render(path, values)
  ERB.new(File.read(path), trim_mode: "-").result(values.get_binding)
end

command, app = ARGV[0], ARGV[1]
case command
when "form"
  print ERB.new(File.read(File.join(app, "form.yml.erb")), trim_mode: "-").result(binding)
when "submit"
  print render(File.join(app, "submit.yml.erb"), Values.new(JSON.parse(File.read(ARGV[2]))))
when "info"
  print render(File.join(app, "info.md.erb"), Values.new(JSON.parse(File.read(ARGV[2]))))
when "view"
  print render(File.join(app, "view.html.erb"), Values.new(JSON.parse(File.read(ARGV[2]))))
when "stage"
  values = Values.new(JSON.parse(File.read(ARGV[2])))
  out = ARGV[3]
  src = File.join(app, "template")
  Dir.glob("**/*", File::FNM_DOTMATCH, base: src).sort.each do |rel|
    from = File.join(src, rel)
    next if File.directory?(from)
    to = File.join(out, rel.sub(/\.erb\z/, ""))
    FileUtils.mkdir_p(File.dirname(to))
    File.write(to, rel.end_with?(".erb") ? render(from, values) : File.read(from))
    File.chmod(File.stat(from).mode & 0o777, to)
  end
else
  abort "usage: ruby render.rb form|submit|stage|view|info APP_DIR ..."
end

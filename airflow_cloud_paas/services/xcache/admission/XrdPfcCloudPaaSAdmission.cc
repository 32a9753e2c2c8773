//------------------------------------------------------------------------------
// XrdPfcCloudPaaSAdmission: an XCache (XrdPfc) decision library that admits
// files by dataset, from a policy file the cloud-paas smart manager rewrites.
//
// Configuration (xrootd config of the cache):
//   pfc.decisionlib /path/libXrdPfcCloudPaaSAdmission.so <policy file> [<bypass log>]
//
// Policy file (text, written atomically by the manager; re-read when it changes):
//   # comment
//   default admit|bypass        what to do with a file no rule names (default: admit)
//   admit  <directory>          cache files in this directory (a dataset) or below it
//   bypass <directory>          read them straight from the origin, without caching
// The rule of the longest matching directory wins. A file already on the cache's
// disk is always admitted (its blocks are served from there), and so are XCache's
// own commands (/xrdpfc_command/...). A missing policy file admits everything, as
// XCache does without this library; one that cannot be read keeps the last rules.
//
// Every bypassed open is appended to the bypass log as "<epoch seconds> <path>",
// so the manager still learns how popular the bypassed datasets are: such reads
// leave no .cinfo file and no pfc monitoring record.
//------------------------------------------------------------------------------
#include "XrdPfc/XrdPfcDecision.hh"
#include "XrdOss/XrdOss.hh"
#include "XrdSys/XrdSysError.hh"

#include <cerrno>
#include <cstdio>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <unordered_map>

namespace
{
class CloudPaaSAdmission : public XrdPfc::Decision
{
public:
   explicit CloudPaaSAdmission(XrdSysError &log) : m_log(log) {}

   bool ConfigDecision(const char *params) override
   {
      std::istringstream words(params ? params : "");
      words >> m_policy_path >> m_bypass_log;
      if (m_policy_path.empty())
      {
         m_log.Emsg("CloudPaaSAdmission", "no policy file given: pfc.decisionlib <lib> <policy file> [<bypass log>]");
         return false;
      }
      std::lock_guard<std::mutex> lock(m_mutex);
      Reload();
      m_log.Say("++++++ CloudPaaSAdmission: policy ", m_policy_path.c_str(),
                m_bypass_log.empty() ? "" : ", bypass log ", m_bypass_log.c_str());
      return true;
   }

   bool Decide(const std::string &path, XrdOss &oss) const override
   {
      const std::string lfn = Normalized(path);
      // cache commands (/xrdpfc_command/...) are XCache's own business: never in the way, never logged
      if (lfn.compare(0, 16, "/xrdpfc_command/") == 0) return true;
      struct stat st;
      if (oss.Stat(lfn.c_str(), &st) == XrdOssOK) return true;  // already cached: serve it from disk
      bool admit;
      {
         std::lock_guard<std::mutex> lock(m_mutex);
         Reload();
         admit = Lookup(lfn);
      }
      if (!admit) LogBypass(lfn);
      return admit;
   }

private:
   // XrdCl's URL path of the origin's file: one leading slash (a single-slash URL drops it), no doubles
   static std::string Normalized(const std::string &path)
   {
      std::string out;
      out.reserve(path.size() + 1);
      out += '/';
      for (char c : path)
         if (c != '/' || out.back() != '/') out += c;
      return out;
   }

   bool Lookup(const std::string &lfn) const
   {
      std::string dir = lfn;
      while (true)
      {
         std::string::size_type slash = dir.rfind('/');
         if (slash == std::string::npos) break;
         dir.erase(slash);
         auto rule = m_rules.find(dir.empty() ? "/" : dir);
         if (rule != m_rules.end()) return rule->second;
         if (dir.empty()) break;
      }
      return m_default_admit;
   }

   // caller holds m_mutex
   void Reload() const
   {
      struct stat st;
      if (stat(m_policy_path.c_str(), &st) != 0)
      {
         if (m_loaded || !m_missing_said)
         {
            m_log.Emsg("CloudPaaSAdmission", "no policy file, admitting every file:", m_policy_path.c_str());
            m_missing_said = true;
         }
         m_rules.clear();
         m_default_admit = true;
         m_loaded = false;
         m_mtime = m_ctime = {0, 0};
         return;
      }
      if (m_loaded && Same(st.st_mtim, m_mtime) && Same(st.st_ctim, m_ctime) && st.st_ino == m_inode
          && st.st_size == m_size)
         return;
      std::ifstream in(m_policy_path);
      if (!in)
      {
         m_log.Emsg("CloudPaaSAdmission", "cannot read the policy file, keeping the previous rules:",
                    m_policy_path.c_str());
         return;
      }
      std::unordered_map<std::string, bool> rules;
      bool default_admit = true;
      std::string line;
      int number = 0, bad = 0;
      while (std::getline(in, line))
      {
         ++number;
         std::istringstream words(line);
         std::string verb, arg;
         if (!(words >> verb) || verb[0] == '#') continue;
         words >> std::ws;
         std::getline(words, arg);
         while (!arg.empty() && (arg.back() == ' ' || arg.back() == '\t' || arg.back() == '\r')) arg.pop_back();
         if (verb == "default" && (arg == "admit" || arg == "bypass"))
            default_admit = arg == "admit";
         else if ((verb == "admit" || verb == "bypass") && !arg.empty() && arg[0] == '/')
         {
            while (arg.size() > 1 && arg.back() == '/') arg.pop_back();
            rules[arg] = verb == "admit";
         }
         else
         {
            ++bad;
            char where[64];
            snprintf(where, sizeof(where), "line %d of", number);
            m_log.Emsg("CloudPaaSAdmission", "ignoring a bad rule at", where, m_policy_path.c_str());
         }
      }
      m_rules.swap(rules);
      m_default_admit = default_admit;
      m_loaded = true;
      m_missing_said = false;
      m_mtime = st.st_mtim;
      m_ctime = st.st_ctim;
      m_inode = st.st_ino;
      m_size = st.st_size;
      char summary[128];
      snprintf(summary, sizeof(summary), "%zu rule(s), default %s, %d bad line(s) from", m_rules.size(),
               m_default_admit ? "admit" : "bypass", bad);
      m_log.Say("++++++ CloudPaaSAdmission: ", summary, " ", m_policy_path.c_str());
   }

   static bool Same(const struct timespec &a, const struct timespec &b)
   {
      return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec;
   }

   void LogBypass(const std::string &lfn) const
   {
      if (m_bypass_log.empty()) return;
      struct timeval now;
      gettimeofday(&now, nullptr);
      char stamp[64];
      int n = snprintf(stamp, sizeof(stamp), "%ld.%03ld ", (long) now.tv_sec, (long) (now.tv_usec / 1000));
      std::string record(stamp, n);
      record += lfn;
      record += '\n';
      // one write with O_APPEND: records from concurrent opens never interleave
      int fd = open(m_bypass_log.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
      if (fd < 0)
      {
         m_log.Emsg("CloudPaaSAdmission", errno, "open the bypass log", m_bypass_log.c_str());
         return;
      }
      if (write(fd, record.data(), record.size()) != (ssize_t) record.size())
         m_log.Emsg("CloudPaaSAdmission", errno, "append to the bypass log", m_bypass_log.c_str());
      close(fd);
   }

   XrdSysError &m_log;
   std::string m_policy_path, m_bypass_log;
   mutable std::mutex m_mutex;
   mutable std::unordered_map<std::string, bool> m_rules;
   mutable bool m_default_admit = true, m_loaded = false, m_missing_said = false;
   mutable struct timespec m_mtime = {0, 0}, m_ctime = {0, 0};
   mutable ino_t m_inode = 0;
   mutable off_t m_size = 0;
};
}  // namespace

extern "C"
{
XrdPfc::Decision *XrdPfcGetDecision(XrdSysError &log)
{
   return new CloudPaaSAdmission(log);
}
}

// Reads a ZIP archive with both of Java's readers and prints what each saw:
//   java ZipCheck.java archive.zip  ->  "ZipFile <entries> <bytes>" and "ZipInputStream <entries> <bytes>"
import java.io.*;
import java.util.*;
import java.util.zip.*;

public class ZipCheck {
    public static void main(String[] args) throws Exception {
        long entries = 0, bytes = 0;
        byte[] buffer = new byte[1 << 16];
        try (ZipFile zip = new ZipFile(args[0])) {
            for (Enumeration<? extends ZipEntry> e = zip.entries(); e.hasMoreElements();) {
                ZipEntry entry = e.nextElement();
                try (InputStream in = zip.getInputStream(entry)) {
                    for (int n; (n = in.read(buffer)) > 0;) bytes += n;
                }
                entries++;
            }
        }
        System.out.println("ZipFile " + entries + " " + bytes);
        entries = 0; bytes = 0;
        try (ZipInputStream in = new ZipInputStream(new BufferedInputStream(new FileInputStream(args[0]), 1 << 20))) {
            for (ZipEntry entry; (entry = in.getNextEntry()) != null;) {
                for (int n; (n = in.read(buffer)) > 0;) bytes += n;
                entries++;
            }
        }
        System.out.println("ZipInputStream " + entries + " " + bytes);
    }
}

-- Contact details (issue 16): the job title, company, phone (E.164) and website a lead's
-- signature or website form gives (parsed.contact_details). The sink fills a contact's empty
-- fields with them and never overwrites one.
ALTER TABLE contacts ADD COLUMN title text;
ALTER TABLE contacts ADD COLUMN company text;
ALTER TABLE contacts ADD COLUMN phone text;
ALTER TABLE contacts ADD COLUMN website text;
